"""RQ entry point for fine-tuning: ``train_job(pk, resume=False)`` (queued by training_app.services only).

Thin: reads the run's items, calls :func:`gpu_worker.train.train_model` with a local output folder
(``projects/<p>/runs/<id>/``; with local storage this IS the storage folder, so checkpoints survive for
resume), streams live metrics into ``run.metrics`` and the log tail into ``run.log``, and stores the
outputs (``save_tree`` for remote storages, also after a cancel so the checkpoint can be resumed).
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

from django.utils import timezone

from datasets_app.services import training_items
from piggyback import files
from piggyback.jobs import background_job
from training_app.models import TrainingRun

LOG_TAIL_LINES = 200
MAX_LOSS_POINTS = 400
_STAGE = re.compile(r"Epoch (\d+)/(\d+)(?: · step (\d+)/(\d+))?")


class LiveMetrics:
    """Collects train_model's reports into ``run.metrics`` (loss curve, per-epoch validation accuracy, ETA),
    written at most every ``min_interval`` seconds, always at the end of an epoch."""

    def __init__(self, run: TrainingRun, min_interval: float = 2.0, out_dir: Path | None = None):
        self.run = run
        self.out_dir = out_dir
        self.min_interval = min_interval
        m = dict(run.metrics or {})
        self.data = m
        m.setdefault("loss_curve", [])
        m.setdefault("epochs", [])
        # A resumed run redoes the unfinished epoch: drop points past the last completed epoch.
        done = len(m["epochs"])
        m["loss_curve"] = [p for p in m["loss_curve"] if p["x"] <= done]
        self.stage = ""
        self._last = 0.0

    def report_wrapper(self, reporter):
        def report(progress, stage, metrics=None):
            self.stage = stage or ""
            self.progress = progress
            reporter(progress, stage, metrics)
            if stage.endswith("done"):
                reporter(progress, stage, None, force=True)
        return report

    def __call__(self, metrics: dict):
        m = self.data
        match = _STAGE.search(self.stage)
        epoch_end = self.stage.endswith("done")
        if match:
            m["epoch"], m["epochs_total"] = int(match.group(1)), int(match.group(2))
            if match.group(3):
                m["step"], m["steps_per_epoch"] = int(match.group(3)), int(match.group(4))
        if metrics.get("eta_seconds") is not None:
            m["eta_seconds"] = metrics["eta_seconds"]
        if metrics.get("loss") is not None and match:
            if epoch_end:
                x = float(match.group(1))
            elif match.group(3):
                x = int(match.group(1)) - 1 + int(match.group(3)) / max(1, int(match.group(4)))
            else:
                x = None
            if x is not None:
                m["loss_curve"].append({"x": round(x, 4), "loss": metrics["loss"]})
                if len(m["loss_curve"]) > MAX_LOSS_POINTS:  # thin out the oldest half
                    half = len(m["loss_curve"]) // 2
                    m["loss_curve"] = m["loss_curve"][:half:2] + m["loss_curve"][half:]
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
    try:
        items, image_root = training_items(run.dataset, labelled_only=True)
    except ValueError as exc:  # the datasets app's readable errors (e.g. the dataset is not ready)
        raise UserFacingError(str(exc)) from exc
    if len(items) < 2:
        raise UserFacingError(f"The dataset “{run.dataset.name}” has no questions with answers any more, so there "
                              "is nothing to learn from. Choose a dataset with an answer column.")
    out_dir = files.local_dir(prefix)
    out_dir.mkdir(parents=True, exist_ok=True)
    live = LiveMetrics(run, out_dir=out_dir)
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
        if not files.is_local_storage():
            files.save_tree(out_dir, prefix)
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
