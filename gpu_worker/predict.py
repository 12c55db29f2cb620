"""Inference: ``load_model`` (any registered family, from a fine-tuned folder or a hub id) and
``predict_batch`` (chunked, cancellable, with top-k, confidence and regions).

Each prediction is ``{"answer", "confidence", "top_k": [{"answer", "score"}],
"regions": [{"box": [x0, y0, x1, y1], "score"}]}``; boxes are in ORIGINAL image pixels, regions are
sorted strongest first and their scores sum to 1 (per-cell attention summed over heads/layers).
``confidence`` is the top answer's probability (softmax or sigmoid for classifiers, the sequence
probability for generative families) after the model's fitted calibration, when it has one
(``piggyback.json`` "calibration", see :mod:`gpu_worker.calibration`).
"""
from __future__ import annotations

import inspect
import json
import os

from gpu_worker import Cancelled, UserFacingError
from gpu_worker.calibration import apply_to_predictions
from gpu_worker.models.base import read_piggyback_json, resolve_device
from gpu_worker.models.registry import all_specs, get_adapter_class, get_spec

__all__ = ["load_model", "predict_batch", "detect_model_key"]

# transformers model_type -> PiggyBack model key (for folders without piggyback.json)
_MODEL_TYPE_TO_KEY = {
    "piggyback-baseline": None,   # resolved from question_encoder below
    "vilt": "vilt", "visual_bert": "visualbert", "lxmert": "lxmert", "blip": "blip",
    "blip-2": "blip2", "blip_2": "blip2", "florence2": "florence2",
}


def detect_model_key(folder: str) -> str | None:
    """Model key of a saved folder: piggyback.json's ``model_key``, else guessed from config.json."""
    meta = read_piggyback_json(folder)
    if meta.get("model_key"):
        return meta["model_key"]
    cfg_path = os.path.join(folder, "config.json")
    if not os.path.isfile(cfg_path):
        return None
    try:
        with open(cfg_path, encoding="utf-8") as fh:
            cfg = json.load(fh)
    except (OSError, ValueError):
        return None
    mtype = cfg.get("model_type", "")
    if mtype == "piggyback-baseline":
        return {"gru": "baseline-rnn", "bow": "baseline-bow", "minilm": "baseline-minilm"}.get(
            cfg.get("question_encoder", "gru"), "baseline-rnn")
    key = _MODEL_TYPE_TO_KEY.get(mtype)
    if key:
        return key
    families = {s.family: s.key for s in all_specs()}
    return families.get(mtype.replace("-", "").replace("_", ""))


def _accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def load_model(folder_or_hub_id: str, model_key: str | None = None, device=None):
    """Load an adapter: a fine-tuned folder (family from piggyback.json / config.json) or a hub id
    (``model_key`` names the family, or a registered spec whose default_source is this id)."""
    src = str(folder_or_hub_id)
    dev = resolve_device(device)
    key = model_key
    if key is None and os.path.isdir(src):
        key = detect_model_key(src)
    if key is None:
        for spec in all_specs():
            if spec.default_source and spec.default_source == src:
                key = spec.key
                break
    if key is None:
        raise UserFacingError(f"Cannot tell which kind of model {src} is: it has no piggyback.json and "
                              "no recognised config.json. Choose the model type explicitly.")
    get_spec(key)  # clear error for unknown keys
    adapter = get_adapter_class(key).load(src, device=dev)
    if os.path.isdir(src):   # the calibration fitted after training (gpu_worker.calibration)
        adapter.calibration = read_piggyback_json(src).get("calibration") or {}
    adapter.eval()
    return adapter


def predict_batch(adapter, items, image_root, *, top_k=5, batch_size=64, explain=True, report=None,
                  should_cancel=None, **gen) -> list[dict]:
    """Predict ``items`` in chunks of ``batch_size`` questions (grouped by image inside the adapter).

    Calls ``report(progress, stage)`` after each chunk and checks ``should_cancel()`` before each one
    (raising :class:`Cancelled`). Returns one dict per item, in order.
    """
    if int(batch_size) < 1:
        raise ValueError("batch_size must be at least 1")
    if int(top_k) < 1:
        raise ValueError("top_k must be at least 1")
    items = list(items)
    report = report or (lambda progress, stage, metrics=None: None)
    out: list[dict] = []
    # chunks keep memory bounded for huge evaluations; inside a chunk the adapter batches by image
    chunk = max(int(batch_size), 1024)
    adapter.eval()
    for start in range(0, len(items), chunk):
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"Prediction cancelled after {start} of {len(items)} questions")
        part = items[start:start + chunk]
        kw = dict(gen)
        if _accepts(adapter.predict, "batch_size"):
            kw["batch_size"] = int(batch_size)
        out.extend(apply_to_predictions(adapter.predict(part, image_root, top_k=top_k, explain=explain, **kw),
                                        getattr(adapter, "calibration", None)))
        report(min(1.0, (start + len(part)) / max(1, len(items))),
               f"Answered {start + len(part):,} of {len(items):,} questions", None)
    return out
