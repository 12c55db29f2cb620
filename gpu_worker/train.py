"""Fine-tune / train any registered model: ``train_model(model_key, items, image_root, out_dir, params)``.

* validation split BY IMAGE (no image on both sides), early stopping on validation VQA accuracy;
* AdamW (no decay on biases/norms) + linear warm-up + linear decay, gradient accumulation, clipping;
* AMP + pinned memory on CUDA; seeded and reproducible (a resumed run equals an uninterrupted one);
* checkpoint each epoch and on cancel (model, optimizer, scheduler, scaler, epoch, step, RNG, history)
  under ``out_dir/checkpoints/``; ``resume=True`` continues from it;
* writes ``out_dir/model/`` (from_pretrained-loadable, best epoch), ``out_dir/metrics.json``,
  ``out_dir/train.log``.
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
from gpu_worker.metrics import evaluate
from gpu_worker.models.base import resolve_device
from gpu_worker.models.registry import get_adapter_class, get_spec, resolve_params

__all__ = ["train_model", "split_by_image", "set_torch_threads"]

CKPT_DIR = "checkpoints"
STATE_FILE = "last.pt"
REPORT_EVERY_S = 1.0



MIN_STEPS_PER_EPOCH = 40

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


def _validate(adapter, val_items, val_enc, image_root, batch_size):
    adapter.eval()
    if hasattr(adapter, "predict_encoded"):
        preds = adapter.predict_encoded(val_enc, top_k=1, explain=False, batch_size=max(batch_size, 256))
    else:
        preds = adapter.predict(val_items, image_root, top_k=1, explain=False)
    adapter.train()
    return evaluate([p["answer"] for p in preds], val_items)


def train_model(model_key, items, image_root, out_dir, params: dict, *, source=None, report=None,  # noqa: C901 - split into steps under issue 15
                should_cancel=None, resume=True, device=None) -> dict:
    """Train ``model_key`` on ``items``; see the module docstring. Returns the result dict."""
    report = report or (lambda progress, stage, metrics=None: None)
    should_cancel = should_cancel or (lambda: False)
    spec = get_spec(model_key)
    params = dict(params or {})
    preset = params.pop("preset", None)       # "quick" | "balanced" | "thorough" (registry.PRESETS)
    params = resolve_params(model_key, params, preset=preset)
    os.makedirs(os.path.join(out_dir, CKPT_DIR), exist_ok=True)
    log = _Log(os.path.join(out_dir, "train.log"))
    ckpt_path = os.path.join(out_dir, CKPT_DIR, STATE_FILE)
    ckpt_model = os.path.join(out_dir, CKPT_DIR, "model")
    best_dir = os.path.join(out_dir, CKPT_DIR, "best")
    dev = resolve_device(device)
    threads = set_torch_threads() if dev.type == "cpu" else torch.get_num_threads()
    AdapterCls = get_adapter_class(model_key)

    state = None
    if resume and os.path.isfile(ckpt_path):
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if state.get("model_key") != model_key:
            log(f"ignoring checkpoint of another model ({state.get('model_key')})")
            state = None
        elif state.get("finished") and os.path.isfile(os.path.join(out_dir, "metrics.json")):
            with open(os.path.join(out_dir, "metrics.json"), encoding="utf-8") as fh:
                return json.load(fh)
        else:
            params = state["params"]
    seed = int(params["seed"])
    epochs, bs, accum = int(params["epochs"]), int(params["batch_size"]), int(params["grad_accum_steps"])

    labelled = [it for it in items if it.get("answers")]
    if len(labelled) < 2:
        raise UserFacingError("Training needs at least 2 questions with answers; this data set has "
                              f"{len(labelled)}.")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    train_items, val_items = training_split(labelled, params)

    report(0.0, "Preparing the data", None)
    t_prep = time.perf_counter()
    if state is not None:
        adapter = AdapterCls.load(ckpt_model, device=dev)
        adapter.params.update(params)
        adapter.load_state_dict(state["model_state"])
        log(f"resuming from epoch {state['epoch'] + 1} step {state['step']}")
    else:
        if resume is False and os.path.isdir(os.path.join(out_dir, CKPT_DIR)):
            shutil.rmtree(os.path.join(out_dir, CKPT_DIR))
            os.makedirs(os.path.join(out_dir, CKPT_DIR))
        adapter = AdapterCls.create(spec, train_items, image_root, params, source=source, device=dev)
        adapter.save(ckpt_model)
        log(f"new run: model={model_key} device={dev} threads={threads} params={json.dumps(params, sort_keys=True)}")
    train_enc = adapter.encode(train_items, image_root)
    val_enc = adapter.encode(val_items, image_root) if val_items and hasattr(adapter, "predict_encoded") else None
    prep_s = time.perf_counter() - t_prep
    log(f"data: {len(train_items)} train / {len(val_items)} validation questions, prepared in {prep_s:.1f}s")

    adapter.train()
    # Small data sets: a batch size tuned for 40k questions would leave a handful of steps per epoch
    # (200 images x 9 questions = 7 steps at 256), and the model would barely move. Shrink the batch
    # so every epoch has at least MIN_STEPS_PER_EPOCH optimiser steps (deterministic, so resume agrees).
    if params.get("auto_batch_size", True) and len(train_items) < bs * MIN_STEPS_PER_EPOCH:
        small_bs = max(8, len(train_items) // MIN_STEPS_PER_EPOCH)
        if small_bs < bs:
            log(f"small data set: batch size {bs} -> {small_bs} for at least {MIN_STEPS_PER_EPOCH} steps per epoch")
            bs = small_bs
    nb = adapter.num_batches(train_enc, bs)
    steps_per_epoch = math.ceil(nb / accum)
    total_steps = steps_per_epoch * epochs
    optimizer = _optimizer(adapter, float(params["learning_rate"]), float(params["weight_decay"]))
    scheduler = _schedule(optimizer, total_steps, int(round(float(params["warmup_ratio"]) * total_steps)))
    use_amp = dev.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    max_norm = float(params.get("max_grad_norm", 5.0))

    history, best, best_epoch, bad_epochs = [], float("-inf"), 0, 0
    start_epoch, start_step, loss_sum, loss_n, epoch_secs = 0, 0, 0.0, 0, 0.0
    train_seconds = 0.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        history, best, best_epoch, bad_epochs = state["history"], state["best"], state["best_epoch"], state["bad_epochs"]
        start_epoch, start_step = state["epoch"], state["step"]
        loss_sum, loss_n, epoch_secs = state["loss_sum"], state["loss_n"], state["epoch_secs"]
        train_seconds = state["train_seconds"]
        _set_rng_state(state["rng"])

    def checkpoint(epoch, step, finished=False):
        _atomic_save({"model_key": model_key, "params": params, "model_state": adapter.state_dict(),
                      "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                      "scaler": scaler.state_dict(), "epoch": epoch, "step": step, "rng": _rng_state(),
                      "history": history, "best": best, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                      "loss_sum": loss_sum, "loss_n": loss_n, "epoch_secs": epoch_secs,
                      "train_seconds": train_seconds, "stopped_early": stopped_early,
                      "finished": finished}, ckpt_path)

    last_report = 0.0
    stopped_early = bool(state.get("stopped_early")) if state is not None else False
    epoch = start_epoch
    done_steps = start_epoch * nb + start_step
    while epoch < epochs and not stopped_early:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        t0 = time.perf_counter()
        for step, batch in enumerate(adapter.batches(train_enc, bs, shuffle=True, generator=gen)):
            if step < start_step:
                continue
            if should_cancel():
                epoch_secs += time.perf_counter() - t0
                train_seconds += time.perf_counter() - t0
                checkpoint(epoch, step)
                log(f"cancelled at epoch {epoch + 1} step {step}; checkpoint saved")
                raise Cancelled(f"Training cancelled at epoch {epoch + 1}, step {step}")
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=use_amp):
                loss = adapter.training_loss(batch)
            if not torch.isfinite(loss):
                raise UserFacingError("Training diverged (the loss became infinite or NaN). "
                                      "Try a smaller learning rate.")
            scaler.scale(loss / accum).backward()
            loss_sum += float(loss.detach())
            loss_n += 1
            if (step + 1) % accum == 0 or step + 1 == nb:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(adapter.trainable_parameters(), max_norm)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
            done_steps += 1
            now = time.perf_counter()
            if now - last_report >= REPORT_EVERY_S:
                last_report = now
                elapsed = train_seconds + now - t0
                rate = elapsed / max(1, done_steps - start_epoch * nb - start_step) if elapsed else 0.0
                eta = rate * (epochs * nb - done_steps)
                report(done_steps / (epochs * nb), f"Epoch {epoch + 1}/{epochs} · step {step + 1}/{nb}",
                       {"loss": round(loss_sum / max(1, loss_n), 5), "eta_seconds": round(eta, 1),
                        "epoch": epoch + 1,
                        "val_vqa_accuracy": history[-1]["val_vqa_accuracy"] if history else None})
        start_step = 0
        dt = time.perf_counter() - t0
        epoch_secs += dt
        train_seconds += dt
        val = _validate(adapter, val_items, val_enc, image_root, bs)["vqa_accuracy"] if val_items else None
        entry = {"epoch": epoch + 1, "loss": round(loss_sum / max(1, loss_n), 6), "val_vqa_accuracy": val,
                 "seconds": round(epoch_secs, 2), "lr": scheduler.get_last_lr()[0]}
        history.append(entry)
        loss_sum, loss_n, epoch_secs = 0.0, 0, 0.0
        score = val if val is not None else -entry["loss"]
        if score > best + 1e-9:
            best, best_epoch, bad_epochs = score, epoch + 1, 0
            adapter.save(best_dir)
        else:
            bad_epochs += 1
        log(f"epoch {epoch + 1}/{epochs}: loss={entry['loss']:.4f} val_vqa_accuracy={val} ({entry['seconds']}s)")
        epoch += 1
        patience = int(params["patience"])
        if val is not None and (val >= 100.0 or (patience and bad_epochs >= patience)):
            stopped_early = epoch < epochs
        checkpoint(epoch, 0)
        report(done_steps / (epochs * nb), f"Epoch {epoch}/{epochs} done",
               {"loss": entry["loss"], "val_vqa_accuracy": val, "epoch": epoch,
                "eta_seconds": round(train_seconds / max(1, epoch - start_epoch) * (epochs - epoch), 1)})
        if stopped_early:
            log(f"early stop after epoch {epoch} (best epoch {best_epoch})")
            break

    model_dir = os.path.join(out_dir, "model")
    if os.path.isdir(model_dir):
        shutil.rmtree(model_dir)
    shutil.copytree(best_dir, model_dir)
    best_adapter = AdapterCls.load(model_dir, device=dev)
    val_metrics = _validate(best_adapter, val_items, best_adapter.encode(val_items, image_root)
                            if hasattr(best_adapter, "predict_encoded") else None, image_root, bs) if val_items else None
    result = {
        "model_key": model_key, "vqa_accuracy": val_metrics["vqa_accuracy"] if val_metrics else None,
        "best_epoch": best_epoch, "epochs_run": len(history), "history": history, "device": str(dev),
        "num_train": len(train_items), "num_val": len(val_items),
        "num_train_images": len({it["image"] for it in train_items}),
        "num_val_images": len({it["image"] for it in val_items}),
        "num_answers": len(getattr(adapter, "id2label", {}) or {}), "params": params,
        "train_seconds": round(train_seconds, 2), "prepare_seconds": round(prep_s, 2),
        "stopped_early": stopped_early, "model_dir": model_dir, "val_metrics": val_metrics, "threads": threads,
    }
    with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2, default=str)
    checkpoint(epoch, 0, finished=True)
    log(f"finished: best epoch {best_epoch}, validation VQA accuracy {result['vqa_accuracy']}")
    report(1.0, "Finished", {"val_vqa_accuracy": result["vqa_accuracy"], "best_epoch": best_epoch})
    return result
