"""Fine-tune / train any registered model: ``train_model(model_key, items, image_root, out_dir, params)``.

* validation split BY IMAGE (no image on both sides), early stopping on validation VQA accuracy;
* AdamW (no decay on biases/norms) + linear warm-up + linear decay, gradient accumulation, clipping;
* AMP + pinned memory on CUDA; seeded and reproducible (a resumed run equals an uninterrupted one);
* checkpoint each epoch and on cancel (model, optimizer, scheduler, scaler, epoch, step, RNG, history)
  under ``out_dir/checkpoints/``; ``resume=True`` continues from it;
* writes ``out_dir/model/`` (from_pretrained-loadable, best epoch), ``out_dir/metrics.json``,
  ``out_dir/train.log``;
* bounded memory: a split with more than ``image_chunk`` images (``PIGGYBACK_IMAGE_CHUNK``, default
  4,096) is encoded one window of images at a time (fixed seeded windows; each epoch visits them in a
  seeded order and shuffles inside each), so the decoded pixels held never grow with the dataset.
  Smaller splits are encoded once, as before.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import time

import numpy as np
import torch

from gpu_worker import Cancelled, UserFacingError
from gpu_worker.calibration import MIN_CALIBRATION_ITEMS, calibrate
from gpu_worker.metrics import evaluate, majority_answer, vqa_score
from gpu_worker.models.base import PIGGYBACK_FILE, read_piggyback_json, resolve_device
from gpu_worker.models.registry import get_adapter_class, get_spec, resolve_params

__all__ = ["train_model", "split_by_image", "set_torch_threads", "image_chunk", "image_windows"]

CKPT_DIR = "checkpoints"
STATE_FILE = "last.pt"
REPORT_EVERY_S = 1.0



MIN_STEPS_PER_EPOCH = 40
CALIBRATION_TOP_K = 100   # softmax heads: answers listed for the temperature fit (the rest is one class)
IMAGE_CHUNK = 4096        # images decoded at a time by a training or validation on a big split


def image_chunk() -> int:
    """Images encoded at a time: ``PIGGYBACK_IMAGE_CHUNK`` when set (>= 1), else :data:`IMAGE_CHUNK`."""
    env = os.environ.get("PIGGYBACK_IMAGE_CHUNK", "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else IMAGE_CHUNK


def _window_indices(items: list, max_images: int, seed: int | None = None) -> list[list[int]]:
    images = list(dict.fromkeys(str(it["image"]) for it in items))
    if seed is not None:
        random.Random(seed).shuffle(images)
    size = max(1, int(max_images))
    window_of = {name: i // size for i, name in enumerate(images)}
    windows: list[list[int]] = [[] for _ in range(-(-len(images) // size))]
    for i, it in enumerate(items):
        windows[window_of[str(it["image"])]].append(i)
    return windows


def image_windows(items: list, max_images: int, seed: int | None = None) -> list[list]:
    """``items`` grouped into windows of at most ``max_images`` distinct images (every question of an image
    in the same window, in the items' order). ``seed`` shuffles which images share a window; ``None``
    keeps the images' first-appearance order."""
    return [[items[i] for i in w] for w in _window_indices(items, max_images, seed)]


def set_torch_threads() -> int:
    """CPU threads for torch: ``PIGGYBACK_TORCH_THREADS`` when set, else all usable cores but one
    (min 1, max 16); returns the count.

    Why one fewer: the worker shares its machine with the web app, database and Redis. When torch's
    OpenMP threads outnumber the free cores, every parallel region waits for a descheduled thread: on
    the 2-core reference machine under load, one easy-VQA epoch took 108 s with 2 threads and 9 s with 1.
    """
    env = os.environ.get("PIGGYBACK_TORCH_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        torch.set_num_threads(int(env))
        return int(env)
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        n = os.cpu_count() or 1
    n = max(1, min(16, n - 1))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def split_by_image(items: list[dict], val_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Seeded split: a ``val_fraction`` share of the IMAGES (and all their questions) goes to validation."""
    images = sorted({str(it["image"]) for it in items})
    if val_fraction <= 0 or len(images) < 2:
        return list(items), []
    random.Random(seed).shuffle(images)
    n_val = min(len(images) - 1, max(1, round(val_fraction * len(images))))
    val_images = set(images[:n_val])
    train = [it for it in items if str(it["image"]) not in val_images]
    val = [it for it in items if str(it["image"]) in val_images]
    return train, val


class _Log:
    def __init__(self, path):
        self.path = path

    def __call__(self, msg):
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(time.strftime("%Y-%m-%d %H:%M:%S ") + msg + "\n")


def training_split(items: list[dict], params: dict) -> tuple[list[dict], list[dict]]:
    """(train, validation) exactly as :func:`train_model` splits ``items`` with resolved ``params``: labelled
    questions only, capped at ``max_train_items`` (seeded), then :func:`split_by_image`. The web app calls this
    too, to know which images a run never trained on."""
    seed = int(params["seed"])
    labelled = [it for it in items if it.get("answers")]
    if params.get("max_train_items") and len(labelled) > int(params["max_train_items"]):
        keep = sorted(random.Random(seed).sample(range(len(labelled)), int(params["max_train_items"])))
        labelled = [labelled[i] for i in keep]
    return split_by_image(labelled, float(params["val_fraction"]), seed)


def _rng_state():
    st = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st):
    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _atomic_save(obj, path):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _optimizer(adapter, lr, weight_decay):
    decay, no_decay = [], []
    for p in adapter.trainable_parameters():
        (decay if p.ndim >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise UserFacingError("This model has no trainable parameters with these settings (is everything frozen?).")
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def _schedule(optimizer, total_steps, warmup_steps):
    def f(step):
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, f)


def _predict_items(adapter, items, image_root, enc, top_k, batch_size):
    """Predictions for ``items`` in their order: from ``enc`` (all of them encoded) when given, else window by
    window of at most :func:`image_chunk` images (families with ``predict_encoded``), else ``predict``
    (which encodes chunk by chunk itself)."""
    if not hasattr(adapter, "predict_encoded"):
        return adapter.predict(items, image_root, top_k=top_k, explain=False)
    if enc is not None:
        return adapter.predict_encoded(enc, top_k=top_k, explain=False, batch_size=batch_size)
    preds: list = [None] * len(items)
    for window in _window_indices(items, image_chunk()):
        got = adapter.predict_encoded(adapter.encode([items[i] for i in window], image_root), top_k=top_k,
                                      explain=False, batch_size=batch_size)
        for i, p in zip(window, got):
            preds[i] = p
    return preds


def _validate(adapter, val_items, val_enc, image_root, batch_size):
    adapter.eval()
    preds = _predict_items(adapter, val_items, image_root, val_enc, 1, max(batch_size, 256))
    adapter.train()
    return evaluate([p["answer"] for p in preds], val_items)


def train_model(model_key, items, image_root, out_dir, params: dict, *, source=None, report=None,
                should_cancel=None, resume=True, device=None) -> dict:
    """Train ``model_key`` on ``items``; see the module docstring. Returns the result dict.

    ``report(progress, stage, metrics)`` receives the progress as fields: ``epoch``, ``epochs_total``,
    ``step`` and ``steps_per_epoch`` (batches), ``epoch_done`` at the end of each epoch, plus the loss,
    the validation accuracy and the ETA; ``stage`` is only the human-readable line."""
    run = _Training(model_key, out_dir, params, source=source, report=report, should_cancel=should_cancel,
                    device=device)
    finished = run.load_checkpoint(resume)
    if finished is not None:
        return finished
    run.select_items(items)
    run.prepare_model_and_data(image_root, resume)
    run.choose_batch_size()
    run.build_optimiser()
    run.restore_loop_state()
    while run.epoch < run.epochs and not run.stopped_early:
        run.train_one_epoch()
        run.end_epoch()
    return run.finish()


class _Training:
    """One call of :func:`train_model`: its settings, model, optimiser and counters, and the steps of the
    procedure as methods (in the order ``train_model`` calls them)."""

    def __init__(self, model_key, out_dir, params, *, source, report, should_cancel, device):
        self.report = report or (lambda progress, stage, metrics=None: None)
        self.should_cancel = should_cancel or (lambda: False)
        self.model_key, self.out_dir, self.source = model_key, out_dir, source
        self.spec = get_spec(model_key)
        params = dict(params or {})
        preset = params.pop("preset", None)       # "quick" | "balanced" | "thorough" (registry.PRESETS)
        self.params = resolve_params(model_key, params, preset=preset)
        os.makedirs(os.path.join(out_dir, CKPT_DIR), exist_ok=True)
        self.log = _Log(os.path.join(out_dir, "train.log"))
        self.ckpt_path = os.path.join(out_dir, CKPT_DIR, STATE_FILE)
        self.ckpt_model = os.path.join(out_dir, CKPT_DIR, "model")
        self.best_dir = os.path.join(out_dir, CKPT_DIR, "best")
        self.dev = resolve_device(device)
        self.threads = set_torch_threads() if self.dev.type == "cpu" else torch.get_num_threads()
        self.AdapterCls = get_adapter_class(model_key)
        self.state = None
        # the loop's counters (restored from the checkpoint when resuming)
        self.history, self.best, self.best_epoch, self.bad_epochs = [], float("-inf"), 0, 0
        self.start_epoch, self.start_step, self.loss_sum, self.loss_n, self.epoch_secs = 0, 0, 0.0, 0, 0.0
        self.train_seconds, self.stopped_early, self.epoch, self.done_steps = 0.0, False, 0, 0
        self.last_report = 0.0

    # ---- 1. an earlier attempt: resume it, or return its result when it had finished -------------
    def load_checkpoint(self, resume: bool) -> dict | None:
        if not (resume and os.path.isfile(self.ckpt_path)):
            return None
        state = torch.load(self.ckpt_path, map_location="cpu", weights_only=False)
        if state.get("model_key") != self.model_key:
            self.log(f"ignoring checkpoint of another model ({state.get('model_key')})")
            return None
        metrics_path = os.path.join(self.out_dir, "metrics.json")
        if state.get("finished") and os.path.isfile(metrics_path):
            with open(metrics_path, encoding="utf-8") as fh:
                return json.load(fh)
        self.state = state
        self.params = state["params"]
        return None

    @property
    def epochs(self) -> int:
        return int(self.params["epochs"])

    # ---- 2. which questions: labelled ones, optionally capped, split by image --------------------
    def select_items(self, items) -> None:
        params, seed = self.params, int(self.params["seed"])
        labelled = [it for it in items if it.get("answers")]
        if len(labelled) < 2:
            raise UserFacingError("Training needs at least 2 questions with answers; this data set has "
                                  f"{len(labelled)}.")
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.train_items, self.val_items = training_split(labelled, params)

    # ---- 3. the model (new, or the checkpoint's) and the data encoded once -----------------------
    def prepare_model_and_data(self, image_root, resume) -> None:
        self.image_root = image_root
        self.report(0.0, "Preparing the data", None)
        t_prep = time.perf_counter()
        if self.state is not None:
            self.adapter = self.AdapterCls.load(self.ckpt_model, device=self.dev)
            self.adapter.params.update(self.params)
            self.adapter.load_state_dict(self.state["model_state"])
            self.log(f"resuming from epoch {self.state['epoch'] + 1} step {self.state['step']}")
        else:
            ckpt_dir = os.path.join(self.out_dir, CKPT_DIR)
            if resume is False and os.path.isdir(ckpt_dir):
                shutil.rmtree(ckpt_dir)
                os.makedirs(ckpt_dir)
            self.adapter = self.AdapterCls.create(self.spec, self.train_items, image_root, self.params,
                                                  source=self.source, device=self.dev)
            self.adapter.save(self.ckpt_model)
            self.log(f"new run: model={self.model_key} device={self.dev} threads={self.threads} "
                     f"params={json.dumps(self.params, sort_keys=True)}")
        chunk = image_chunk()
        windows = image_windows(self.train_items, chunk, seed=int(self.params["seed"]))
        # one window: encoded once for every epoch (as always); more: encoded window by window each epoch
        self.train_windows = windows if len(windows) > 1 else None
        self.train_enc = self.adapter.encode(self.train_items, image_root) if self.train_windows is None else None
        small_val = len({str(it["image"]) for it in self.val_items}) <= chunk
        self.val_enc = (self.adapter.encode(self.val_items, image_root)
                        if self.val_items and small_val and hasattr(self.adapter, "predict_encoded") else None)
        self.prep_s = time.perf_counter() - t_prep
        self.log(f"data: {len(self.train_items)} train / {len(self.val_items)} validation questions, "
                 f"prepared in {self.prep_s:.1f}s"
                 + (f"; images encoded in {len(windows)} windows of at most {chunk}" if self.train_windows else ""))
        self.adapter.train()

    # ---- 4. batch size: small data sets get at least MIN_STEPS_PER_EPOCH steps per epoch ---------
    def choose_batch_size(self) -> None:
        # A batch size tuned for 40k questions would leave a handful of steps per epoch (200 images x
        # 9 questions = 7 steps at 256), and the model would barely move. Deterministic, so resume agrees.
        bs, n = int(self.params["batch_size"]), len(self.train_items)
        if self.params.get("auto_batch_size", True) and n < bs * MIN_STEPS_PER_EPOCH:
            small_bs = max(8, n // MIN_STEPS_PER_EPOCH)
            if small_bs < bs:
                self.log(f"small data set: batch size {bs} -> {small_bs} for at least {MIN_STEPS_PER_EPOCH} "
                         "steps per epoch")
                bs = small_bs
        self.bs = bs
        if self.train_windows is None:
            self.nb = self.adapter.num_batches(self.train_enc, bs)
        else:
            self.nb = sum(self.adapter.count_batches(w, bs) for w in self.train_windows)

    # ---- 5. AdamW + warm-up/decay schedule, AMP on CUDA -------------------------------------------
    def build_optimiser(self) -> None:
        params = self.params
        self.accum = int(params["grad_accum_steps"])
        total_steps = math.ceil(self.nb / self.accum) * self.epochs
        self.optimizer = _optimizer(self.adapter, float(params["learning_rate"]), float(params["weight_decay"]))
        self.scheduler = _schedule(self.optimizer, total_steps,
                                   int(round(float(params["warmup_ratio"]) * total_steps)))
        self.use_amp = self.dev.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.max_norm = float(params.get("max_grad_norm", 5.0))

    def restore_loop_state(self) -> None:
        st = self.state
        if st is not None:
            self.optimizer.load_state_dict(st["optimizer"])
            self.scheduler.load_state_dict(st["scheduler"])
            self.scaler.load_state_dict(st["scaler"])
            self.history, self.best, self.best_epoch, self.bad_epochs = (
                st["history"], st["best"], st["best_epoch"], st["bad_epochs"])
            self.start_epoch, self.start_step = st["epoch"], st["step"]
            self.loss_sum, self.loss_n, self.epoch_secs = st["loss_sum"], st["loss_n"], st["epoch_secs"]
            self.train_seconds = st["train_seconds"]
            self.stopped_early = bool(st.get("stopped_early"))
            _set_rng_state(st["rng"])
        self.epoch = self.start_epoch
        self.done_steps = self.start_epoch * self.nb + self.start_step

    def checkpoint(self, epoch, step, finished=False) -> None:
        _atomic_save({"model_key": self.model_key, "params": self.params, "model_state": self.adapter.state_dict(),
                      "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                      "scaler": self.scaler.state_dict(), "epoch": epoch, "step": step, "rng": _rng_state(),
                      "history": self.history, "best": self.best, "best_epoch": self.best_epoch,
                      "bad_epochs": self.bad_epochs, "loss_sum": self.loss_sum, "loss_n": self.loss_n,
                      "epoch_secs": self.epoch_secs, "train_seconds": self.train_seconds,
                      "stopped_early": self.stopped_early, "finished": finished}, self.ckpt_path)

    # ---- 6. one epoch: batches, cancel checks, optimiser steps, progress --------------------------
    def train_one_epoch(self) -> None:
        gen = torch.Generator().manual_seed(int(self.params["seed"]) * 1_000_003 + self.epoch)
        self.t0 = time.perf_counter()
        for step, batch in enumerate(self._epoch_batches(gen)):
            if step < self.start_step:
                continue
            if self.should_cancel():
                self._cancel(step)
            self.train_step(step, batch)
            self.done_steps += 1
            now = time.perf_counter()
            if now - self.last_report >= REPORT_EVERY_S:
                self.last_report = now
                self.report_step(step, now)
        self.start_step = 0

    def _epoch_batches(self, gen):
        """The epoch's shuffled batches: from the data encoded once, or window by window (a seeded window
        order, each window encoded, shuffled with ``gen`` and dropped before the next one)."""
        if self.train_windows is None:
            yield from self.adapter.batches(self.train_enc, self.bs, shuffle=True, generator=gen)
            return
        for w in torch.randperm(len(self.train_windows), generator=gen).tolist():
            enc = self.adapter.encode(self.train_windows[w], self.image_root)
            yield from self.adapter.batches(enc, self.bs, shuffle=True, generator=gen)
            del enc

    def _cancel(self, step):
        self.epoch_secs += time.perf_counter() - self.t0
        self.train_seconds += time.perf_counter() - self.t0
        self.checkpoint(self.epoch, step)
        self.log(f"cancelled at epoch {self.epoch + 1} step {step}; checkpoint saved")
        raise Cancelled(f"Training cancelled at epoch {self.epoch + 1}, step {step}")

    def train_step(self, step, batch) -> None:
        with torch.autocast(self.dev.type, dtype=self.amp_dtype, enabled=self.use_amp):
            loss = self.adapter.training_loss(batch)
        if not torch.isfinite(loss):
            raise UserFacingError("Training diverged (the loss became infinite or NaN). "
                                  "Try a smaller learning rate.")
        self.scaler.scale(loss / self.accum).backward()
        self.loss_sum += float(loss.detach())
        self.loss_n += 1
        if (step + 1) % self.accum == 0 or step + 1 == self.nb:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.adapter.trainable_parameters(), self.max_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()

    def _position(self, epoch, step, done=False) -> dict:
        return {"epoch": epoch, "epochs_total": self.epochs, "step": step, "steps_per_epoch": self.nb,
                "epoch_done": done}

    def report_step(self, step, now) -> None:
        epochs, nb = self.epochs, self.nb
        elapsed = self.train_seconds + now - self.t0
        rate = elapsed / max(1, self.done_steps - self.start_epoch * nb - self.start_step) if elapsed else 0.0
        eta = rate * (epochs * nb - self.done_steps)
        self.report(self.done_steps / (epochs * nb), f"Epoch {self.epoch + 1}/{epochs} · step {step + 1}/{nb}",
                    {**self._position(self.epoch + 1, step + 1),
                     "loss": round(self.loss_sum / max(1, self.loss_n), 5), "eta_seconds": round(eta, 1),
                     "val_vqa_accuracy": self.history[-1]["val_vqa_accuracy"] if self.history else None})

    # ---- 7. end of an epoch: validate, keep the best, early stopping, checkpoint ------------------
    def end_epoch(self) -> None:
        dt = time.perf_counter() - self.t0
        self.epoch_secs += dt
        self.train_seconds += dt
        val = (_validate(self.adapter, self.val_items, self.val_enc, self.image_root, self.bs)["vqa_accuracy"]
               if self.val_items else None)
        entry = {"epoch": self.epoch + 1, "loss": round(self.loss_sum / max(1, self.loss_n), 6),
                 "val_vqa_accuracy": val, "seconds": round(self.epoch_secs, 2),
                 "lr": self.scheduler.get_last_lr()[0]}
        self.history.append(entry)
        self.loss_sum, self.loss_n, self.epoch_secs = 0.0, 0, 0.0
        score = val if val is not None else -entry["loss"]
        if score > self.best + 1e-9:
            self.best, self.best_epoch, self.bad_epochs = score, self.epoch + 1, 0
            self.adapter.save(self.best_dir)
        else:
            self.bad_epochs += 1
        self.log(f"epoch {self.epoch + 1}/{self.epochs}: loss={entry['loss']:.4f} val_vqa_accuracy={val} "
                 f"({entry['seconds']}s)")
        self.epoch += 1
        patience = int(self.params["patience"])
        if val is not None and (val >= 100.0 or (patience and self.bad_epochs >= patience)):
            self.stopped_early = self.epoch < self.epochs
        self.checkpoint(self.epoch, 0)
        eta = round(self.train_seconds / max(1, self.epoch - self.start_epoch) * (self.epochs - self.epoch), 1)
        self.report(self.done_steps / (self.epochs * self.nb), f"Epoch {self.epoch}/{self.epochs} done",
                    {**self._position(self.epoch, self.nb, done=True),
                     "loss": entry["loss"], "val_vqa_accuracy": val, "eta_seconds": eta})
        if self.stopped_early:
            self.log(f"early stop after epoch {self.epoch} (best epoch {self.best_epoch})")

    # ---- 8. the best epoch becomes out_dir/model, validated once more; metrics.json ---------------
    def finish(self) -> dict:
        model_dir = os.path.join(self.out_dir, "model")
        if os.path.isdir(model_dir):
            shutil.rmtree(model_dir)
        shutil.copytree(self.best_dir, model_dir)
        best_adapter = self.AdapterCls.load(model_dir, device=self.dev)
        val_metrics, calibration = None, None
        if self.val_items:
            self.report(1.0, "Calibrating the confidence", None)
            preds = self._predict_validation(best_adapter)
            val_metrics = evaluate([p["answer"] for p in preds], self.val_items)
            calibration = self.fit_calibration(best_adapter, preds, model_dir)
        train_items, val_items = self.train_items, self.val_items
        result = {
            "model_key": self.model_key, "vqa_accuracy": val_metrics["vqa_accuracy"] if val_metrics else None,
            "best_epoch": self.best_epoch, "epochs_run": len(self.history), "history": self.history,
            "device": str(self.dev), "num_train": len(train_items), "num_val": len(val_items),
            "num_train_images": len({it["image"] for it in train_items}),
            "num_val_images": len({it["image"] for it in val_items}),
            "num_answers": len(getattr(self.adapter, "id2label", {}) or {}), "params": self.params,
            "train_seconds": round(self.train_seconds, 2), "prepare_seconds": round(self.prep_s, 2),
            "stopped_early": self.stopped_early, "model_dir": model_dir, "val_metrics": val_metrics,
            "threads": self.threads, "calibration": calibration,
        }
        with open(os.path.join(self.out_dir, "metrics.json"), "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2, default=str)
        self.checkpoint(self.epoch, 0, finished=True)
        self.log(f"finished: best epoch {self.best_epoch}, validation VQA accuracy {result['vqa_accuracy']}")
        self.report(1.0, "Finished", {"val_vqa_accuracy": result["vqa_accuracy"], "best_epoch": self.best_epoch})
        return result

    def _predict_validation(self, adapter) -> list[dict]:
        """The best model's validation answers, with enough of the answer list for the calibration fit
        (the whole distribution for softmax heads; top-1 elsewhere, where k would change the beams)."""
        k = 1
        if adapter.spec.task != "generate" and adapter.confidence_kind == "softmax":
            k = min(CALIBRATION_TOP_K, max(1, len(getattr(adapter, "id2label", {}) or {})))
        adapter.eval()
        enc = None
        if self.val_enc is not None:   # a small split: encoded once more, for the best model's answers
            enc = adapter.encode(self.val_items, self.image_root)
        return _predict_items(adapter, self.val_items, self.image_root, enc, k, max(self.bs, 256))

    # ---- 9. temperature / Platt scaling on the validation split, stored in piggyback.json ----------
    def fit_calibration(self, adapter, preds, model_dir) -> dict | None:
        kind = "generate" if adapter.spec.task == "generate" else adapter.confidence_kind
        correct = [vqa_score(p["answer"], it["answers"]) for p, it in zip(preds, self.val_items)]
        labels = None
        if kind == "softmax":
            labels = []
            for p, it in zip(preds, self.val_items):
                listed = [t["answer"] for t in p["top_k"]]
                top = majority_answer(it["answers"])
                labels.append(listed.index(top) if top in listed else -1)
        cal = calibrate(kind, preds, correct, labels=labels, groups=[it["image"] for it in self.val_items],
                        seed=int(self.params["seed"]))
        if cal is None:
            self.log(f"calibration skipped: {len(preds)} validation questions (needs {MIN_CALIBRATION_ITEMS})")
            return None
        meta = read_piggyback_json(model_dir)
        meta["calibration"] = cal
        with open(os.path.join(model_dir, PIGGYBACK_FILE), "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=2, sort_keys=True)
        self.log(f"calibration ({cal['method']}) on {cal['n']} validation questions: ECE "
                 f"{cal['ece_before']:.4f} before, {cal['ece_after']:.4f} after (cross-fitted)")
        return cal
