"""RQ entry point for fine-tuning: ``train_job(pk, resume=False)`` (queued by training_app.services only).

Thin: reads the run's items, calls :func:`gpu_worker.train.train_model` with a local output folder
(``projects/<p>/runs/<id>/``; with local storage this IS the storage folder, so checkpoints survive for
resume), streams live metrics into ``run.metrics`` and the log tail into ``run.log``, and stores the
outputs (``save_tree`` for remote storages: after every epoch, so a worker killed mid-run leaves its last
checkpoint in the bucket for resume like it leaves it on a local disk, and at the end or after a cancel).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from django.utils import timezone

from datasets_app.services import training_items
from piggyback import files
from piggyback.jobs import background_job
from training_app.models import TrainingRun

log = logging.getLogger(__name__)
LOG_TAIL_LINES = 200
MAX_LOSS_POINTS = 400


class LiveMetrics:
    """Collects train_model's reports into ``run.metrics`` (loss curve, per-epoch validation accuracy, ETA),
    written at most every ``min_interval`` seconds, always at the end of an epoch."""

    def __init__(self, run: TrainingRun, min_interval: float = 2.0, out_dir: Path | None = None,
                 on_epoch_end=None):
        self.run = run
        self.out_dir = out_dir
        self.on_epoch_end = on_epoch_end
        self.min_interval = min_interval
        m = dict(run.metrics or {})
        self.data = m
        m.setdefault("loss_curve", [])
        m.setdefault("epochs", [])
        # A resumed run redoes the unfinished epoch: drop points past the last completed epoch.
        done = len(m["epochs"])
        m["loss_curve"] = [p for p in m["loss_curve"] if p["x"] <= done]
        self._last = 0.0

    def report_wrapper(self, reporter):
        def report(progress, stage, metrics=None):
            self.progress = progress
            reporter(progress, stage, metrics)
            if metrics and metrics.get("epoch_done"):
                reporter(progress, stage, None, force=True)
        return report

    def __call__(self, metrics: dict):
        """Take train_model's structured progress (``epoch``, ``epochs_total``, ``step``,
        ``steps_per_epoch``, ``epoch_done``, ``loss``, ``eta_seconds``, ...) into ``run.metrics``."""
        m = self.data
        epoch_end = bool(metrics.get("epoch_done"))
        for key in ("epoch", "epochs_total", "step", "steps_per_epoch", "eta_seconds"):
            if metrics.get(key) is not None:
                m[key] = metrics[key]
        if metrics.get("loss") is not None and metrics.get("epoch"):
            self._add_loss_point(metrics, epoch_end)
        if epoch_end and metrics.get("epoch"):
            n = int(metrics["epoch"])
            m["epochs"] = [e for e in m["epochs"] if e["epoch"] < n] + [
                {"epoch": n, "loss": metrics.get("loss"), "val_vqa_accuracy": metrics.get("val_vqa_accuracy")}]
            m["eta_seconds"] = metrics.get("eta_seconds")
        if "best_epoch" in metrics:
            m["best_epoch"] = metrics["best_epoch"]
        now = time.monotonic()
        if epoch_end or now - self._last >= self.min_interval:
            self.flush(with_log=epoch_end)
        if epoch_end and self.on_epoch_end is not None:
            self.on_epoch_end()

    def _add_loss_point(self, metrics: dict, epoch_end: bool):
        """x = epochs done so far (fractional inside an epoch)."""
        m = self.data
        if epoch_end:
            x = float(metrics["epoch"])
        elif metrics.get("step") and metrics.get("steps_per_epoch"):
            x = int(metrics["epoch"]) - 1 + int(metrics["step"]) / max(1, int(metrics["steps_per_epoch"]))
        else:
            return
        m["loss_curve"].append({"x": round(x, 4), "loss": metrics["loss"]})
        if len(m["loss_curve"]) > MAX_LOSS_POINTS:  # thin out the oldest half
            half = len(m["loss_curve"]) // 2
            m["loss_curve"] = m["loss_curve"][:half:2] + m["loss_curve"][half:]

    def flush(self, with_log: bool = False):
        self._last = time.monotonic()
        self.data["updated_at"] = timezone.now().isoformat()
        fields = {"metrics": self.data}
        if with_log and self.out_dir is not None:
            fields["log"] = _log_tail(self.out_dir)
        TrainingRun.objects.filter(pk=self.run.pk).update(**fields)


def _log_tail(out_dir: Path) -> str:
    path = out_dir / "train.log"
    if not path.is_file():
        return ""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(lines[-LOG_TAIL_LINES:])


def _quietly(store):
    """The per-epoch upload: a failure is logged and training goes on (the final upload tries again)."""
    def run():
        try:
            store()
        except Exception:
            log.warning("could not store the checkpoint after an epoch", exc_info=True)
    return run


@background_job("training_app.TrainingRun")
def train_job(run: TrainingRun, reporter, resume: bool = False):
    import torch

    from gpu_worker import UserFacingError
    from gpu_worker.train import train_model
    from training_app.services import run_prefix

    prefix = run.output_dir or run_prefix(run)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        label = f"GPU ({torch.cuda.get_device_name(0)})"
    else:
        label = f"CPU ({torch.get_num_threads()} threads)"
    run._update(device=label[:60], output_dir=prefix)
    reporter(0.0, "Reading the dataset", force=True)
    # slim items: what training reads, shared answer tuples (440,000 questions: ~130 MB instead of ~250)
    items, image_root = training_items(run.dataset, labelled_only=True, slim=True)  # AppError: recorded for the user
    if len(items) < 2:
        raise UserFacingError(f"The dataset “{run.dataset.name}” has no questions with answers any more, so there "
                              "is nothing to learn from. Choose a dataset with an answer column.")
    out_dir = files.local_dir(prefix)  # remote storage: the worker's cached copy (a resume finds its checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = None
    if not files.is_local_storage():
        sent: dict = {}  # files already in the bucket, unchanged since (the checkpoint's model, the best model)

        def store():
            files.save_tree(out_dir, prefix, unchanged=sent)

    live = LiveMetrics(run, out_dir=out_dir, on_epoch_end=_quietly(store) if store else None)
    reporter.on_metrics = live
    report = live.report_wrapper(reporter)
    try:
        result = train_model(
            run.model.registry_key, items, str(image_root), str(out_dir), dict(run.params),
            source=run.model.source or None, report=report, should_cancel=reporter.should_cancel,
            resume=resume, device=device,
        )
    finally:
        live.flush()
        run._update(log=_log_tail(out_dir))
        if store is not None:
            store()
    m = live.data
    m.update({
        "vqa_accuracy": result.get("vqa_accuracy"),
        "best_epoch": result.get("best_epoch"),
        "epochs_run": result.get("epochs_run"),
        "history": result.get("history"),
        "num_train": result.get("num_train"),
        "num_val": result.get("num_val"),
        "num_answers": result.get("num_answers"),
        "train_seconds": result.get("train_seconds"),
        "prepare_seconds": result.get("prepare_seconds"),
        "stopped_early": result.get("stopped_early"),
        "val_metrics": result.get("val_metrics"),
        "calibration": result.get("calibration"),
        "eta_seconds": 0,
    })
    m["epochs"] = [{"epoch": h["epoch"], "loss": h["loss"], "val_vqa_accuracy": h["val_vqa_accuracy"]}
                   for h in result.get("history") or []]
    extractor = feature_extractor_of(os.path.join(str(out_dir), "model"))
    if extractor:  # VisualBERT / LXMERT: which region-feature extractor (name, weights) was used
        m["feature_extractor"] = extractor
    run._update(metrics=m, vqa_accuracy=result.get("vqa_accuracy"))
    return {"vqa_accuracy": result.get("vqa_accuracy"), "epochs_run": result.get("epochs_run")}


def feature_extractor_of(model_dir: str) -> dict | None:
    """{"name", "weights", "backbone", ...} of the region-feature extractor recorded in piggyback.json."""
    from gpu_worker.models.base import read_piggyback_json

    info = read_piggyback_json(model_dir).get("features")
    if not isinstance(info, dict):
        return None
    keep = ("name", "weights", "backbone", "kind", "grid", "id")
    return {k: info[k] for k in keep if k in info}
