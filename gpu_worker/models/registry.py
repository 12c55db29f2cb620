"""The registry of model families: ``ModelSpec`` per key, lazy adapter import, availability checks.

Family modules call :func:`register` at import; :func:`_ensure_loaded` imports the known family
modules (a missing optional one is skipped) so ``all_specs()`` is complete wherever it is called.
"""
from __future__ import annotations

import importlib
import logging
import os
import threading

from gpu_worker.models.base import ModelSpec, VQAAdapter

logger = logging.getLogger(__name__)

DEFAULT_MODEL_KEY = "baseline-rnn"

# Family modules that register specs when imported (optional ones may be missing).
FAMILY_MODULES = (
    "gpu_worker.models.baseline",
    "gpu_worker.models.vilt",
    "gpu_worker.models.visualbert",
    "gpu_worker.models.lxmert",
    "gpu_worker.models.blip",
    "gpu_worker.models.blip2",
    "gpu_worker.models.florence2",
)

# Training parameters every family understands, with their limits (the Django form validates them).
PARAM_LIMITS = {
    "epochs": {"min": 1, "max": 100, "type": "int"},
    "learning_rate": {"min": 1e-6, "max": 1.0, "type": "float"},
    "batch_size": {"min": 1, "max": 4096, "type": "int"},
    "warmup_ratio": {"min": 0.0, "max": 0.5, "type": "float"},
    "weight_decay": {"min": 0.0, "max": 1.0, "type": "float"},
    "val_fraction": {"min": 0.0, "max": 0.5, "type": "float"},
    "patience": {"min": 0, "max": 100, "type": "int"},
    "grad_accum_steps": {"min": 1, "max": 64, "type": "int"},
    "freeze_encoder": {"type": "bool"},
    "seed": {"min": 0, "max": 2**31 - 1, "type": "int"},
    "max_train_items": {"min": 1, "max": 10_000_000, "type": "int", "optional": True},
}

# Presets use the same parameter names; they overlay a spec's default_params (see resolve_params).
# "quick" keeps 20 % of the images for validation and stops only after 2 epochs without progress: on a few
# hundred images, 10 % (about 30 images) made both the early stop and the confidence fit noisy; with patience 1
# one unlucky epoch stopped a 4-epoch run after epoch 2, keeping an epoch-1 model (37 % instead of ~68 %
# VQA accuracy on easy-VQA) whose confidence no temperature could calibrate (bench/bench_calibration.py).
PRESETS = {
    "quick": {"epochs": 4, "patience": 2, "val_fraction": 0.2, "max_train_items": 20000},
    "balanced": {},  # = the model's defaults
    "thorough": {"epochs": 25, "patience": 5, "val_fraction": 0.1},
}

_SPECS: dict[str, ModelSpec] = {}
IMPORT_ERRORS: dict[str, str] = {}   # family module -> why it could not be imported
_LOCK = threading.Lock()
_LOADED = False


def register(spec: ModelSpec) -> ModelSpec:
    """Add (or replace) a spec. Returns it, so a family module can write ``X = register(ModelSpec(...))``."""
    if not isinstance(spec, ModelSpec):
        raise TypeError("register() expects a ModelSpec")
    if spec.task not in ("classify", "generate"):
        raise ValueError(f"ModelSpec {spec.key!r}: task must be 'classify' or 'generate'")
    if ":" not in spec.adapter_path:
        raise ValueError(f"ModelSpec {spec.key!r}: adapter_path must look like 'module:Class'")
    _SPECS[spec.key] = spec
    return spec


def _ensure_loaded() -> None:
    global _LOADED
    if _LOADED:
        return
    with _LOCK:
        if _LOADED:
            return
        for mod in FAMILY_MODULES:
            try:
                importlib.import_module(mod)
            except ImportError as exc:  # family file absent / optional dependency missing: skip that family
                IMPORT_ERRORS[mod] = f"{type(exc).__name__}: {exc}"
                logger.warning("model family %s not available: %s", mod, exc)
        _LOADED = True


def get_spec(key: str) -> ModelSpec:
    _ensure_loaded()
    try:
        return _SPECS[key]
    except KeyError:
        known = ", ".join(sorted(_SPECS)) or "none"
        raise KeyError(f"Unknown model {key!r}. Known models: {known}") from None


def all_specs() -> list[ModelSpec]:
    _ensure_loaded()
    return [_SPECS[k] for k in sorted(_SPECS)]


def get_adapter_class(key: str) -> type[VQAAdapter]:
    spec = get_spec(key)
    module_name, _, cls_name = spec.adapter_path.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls


# Generation settings of generative models: ONE set of limits for training (validation answers), the
# start page, single questions and batch evaluations. "default" is used when a request leaves one out.
GEN_LIMITS = {
    "num_beams": {"min": 1, "max": 8, "type": "int", "default": 3},
    "max_new_tokens": {"min": 1, "max": 64, "type": "int", "default": 10},
}
TOP_K_LIMITS = {"min": 1, "max": 20, "type": "int", "default": 5}
# Model-specific keys seen in default_params without a generic limit: sane bounds by name.
EXTRA_LIMITS = {
    "image_size": {"min": 16, "max": 1024, "type": "int"},
    "predict_batch_size": {"min": 1, "max": 4096, "type": "int"},
    "max_grad_norm": {"min": 0.0, "max": 1000.0, "type": "float"},
    "max_answers": {"min": 2, "max": 100_000, "type": "int"},
}


def param_limits(defaults: dict, task: str) -> dict:
    """{name: limits} of every training parameter a model with these defaults and task accepts."""
    limits = dict(PARAM_LIMITS)
    if task == "generate":
        limits.update({k: {n: v for n, v in lim.items() if n != "default"} for k, lim in GEN_LIMITS.items()})
    for name, default in (defaults or {}).items():
        if name in limits:
            continue
        if name in EXTRA_LIMITS:
            limits[name] = EXTRA_LIMITS[name]
        elif isinstance(default, bool):
            limits[name] = {"type": "bool"}
        elif isinstance(default, int):
            limits[name] = {"min": 0, "max": 1_000_000, "type": "int"}
        elif isinstance(default, float):
            limits[name] = {"min": 0.0, "max": 1_000_000.0, "type": "float"}
        else:
            limits[name] = {"type": "str"}
    return limits


def apply_preset(defaults: dict, preset: str | None) -> dict:
    """A model's defaults overlaid by a preset. Presets are tuned for the default model: "quick" never
    trains a family longer than its own default, "thorough" never shorter. Raises ValueError (unknown)."""
    out = dict(defaults or {})
    if not preset:
        return out
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    for name, value in PRESETS[preset].items():
        if name == "epochs" and name in out:
            value = min(value, out[name]) if preset == "quick" else max(value, out[name])
        out[name] = value
    return out


def resolve_training_params(defaults: dict, task: str, params: dict | None = None, preset: str | None = None,
                            *, strict: bool = False) -> tuple[dict, dict]:
    """THE parameter resolver (page, API and worker): ``defaults`` -> preset -> explicit ``params``, each
    value coerced and checked against its limits. Returns (params, errors): errors maps a field to
    ``(kind, detail, limits)`` with kind "preset" | "unknown" | "range" | "value". ``strict`` rejects
    names the model does not know (user input); otherwise they pass through (worker options).
    An empty value keeps the default (an optional parameter is dropped)."""
    errors: dict = {}
    try:
        out = apply_preset(defaults, preset)
    except ValueError as exc:
        out, errors["preset"] = dict(defaults or {}), ("preset", str(exc), {})
    limits = param_limits(defaults, task)
    for name, value in (params or {}).items():
        if name not in limits and strict:
            errors[name] = ("unknown", ", ".join(sorted(limits)), {})
            continue
        if value is None or value == "":
            if limits.get(name, {}).get("optional"):
                out.pop(name, None)
                continue
            if name in out:
                continue
        out[name] = value
    for name in list(out):
        if name not in limits or name in errors:
            continue
        if out[name] is None and limits[name].get("optional"):
            continue
        try:
            out[name] = coerce_param(out[name], limits[name])
        except OutOfRange as exc:
            errors[name] = ("range", str(exc), limits[name])
        except ValueError as exc:
            errors[name] = ("value", str(exc), limits[name])
    return out, errors


def resolve_params(key: str, params: dict | None = None, preset: str | None = None) -> dict:
    """The worker's entry to :func:`resolve_training_params` for a registered model key; raises
    ValueError naming the first bad parameter."""
    spec = get_spec(key)
    out, errors = resolve_training_params(spec.default_params, spec.task, params, preset)
    for name, (kind, detail, lim) in errors.items():
        if kind == "preset":
            raise ValueError(detail)
        if kind == "range":
            raise ValueError(f"Parameter {name!r} must be between {lim['min']} and {lim['max']}, got {detail[4:]}")
        raise ValueError(f"Parameter {name!r} {detail}")
    return out


def resolve_generation(params: dict | None, task: str) -> dict:
    """top_k for every model and, for generative ones, num_beams / max_new_tokens: defaults for missing
    values, clamped into GEN_LIMITS / TOP_K_LIMITS. Raises ValueError(name, message) on a non-number."""
    raw = params or {}

    def one(name, lim):
        value = raw.get(name)
        if value in (None, ""):
            return lim["default"]
        try:
            return max(lim["min"], min(lim["max"], int(value)))
        except (TypeError, ValueError):
            raise ValueError(name, f"{name.replace('_', ' ')} must be a whole number.") from None

    out = {"top_k": one("top_k", TOP_K_LIMITS)}
    if task == "generate":
        out.update({name: one(name, lim) for name, lim in GEN_LIMITS.items()})
    return out


class OutOfRange(ValueError):
    """A parameter value outside its [min, max]; the message is ``got <value>``."""


def coerce_param(value, lim: dict):
    """Coerce one parameter value by its limits (``type`` bool/int/float/str, ``min``/``max``).

    Raises ValueError with a short reason ("must be a number, got 'x'"), or OutOfRange ("got 0").
    The one checker behind :func:`validate_params` and the platform's start form.
    """
    kind = lim.get("type")
    if kind == "str":
        return str(value)[:200]
    if kind == "bool":
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError(f"must be true or false, got {value!r}")
            return value.lower() in ("true", "1", "yes", "on")
        return bool(value)
    try:
        if isinstance(value, bool):
            raise TypeError
        num = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"must be a number, got {value!r}") from None
    if num != num or num in (float("inf"), float("-inf")):
        raise ValueError(f"must be a finite number, got {value!r}")
    if kind == "int":
        if num != int(num):
            raise ValueError(f"must be a whole number, got {value!r}")
        num = int(num)
    if num < lim["min"] or num > lim["max"]:
        raise OutOfRange(f"got {value!r}")
    return num


def validate_params(params: dict) -> dict:
    """Check the generic training parameters against PARAM_LIMITS; unknown keys pass through.

    Raises ValueError naming the parameter and its allowed range. Returns a coerced copy.
    """
    out = dict(params)
    for name, lim in PARAM_LIMITS.items():
        if name not in out:
            continue
        value = out[name]
        if value is None:
            if lim.get("optional"):
                continue
            raise ValueError(f"Parameter {name!r} must not be empty")
        try:
            out[name] = coerce_param(value, lim)
        except OutOfRange:
            raise ValueError(f"Parameter {name!r} must be between {lim['min']} and {lim['max']}, got {value!r}") from None
        except ValueError as exc:
            raise ValueError(f"Parameter {name!r} {exc}") from None
    return out


def _hf_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.constants import HF_HUB_CACHE
    except Exception:
        return False
    folder = os.path.join(HF_HUB_CACHE, "models--" + repo_id.replace("/", "--"))
    if os.path.isdir(os.path.join(folder, "snapshots")) and os.listdir(os.path.join(folder, "snapshots")):
        return True
    try:
        return any(r.repo_id == repo_id and r.repo_type == "model" for r in scan_cache_dir().repos)
    except Exception:
        return False


def _hub_reachable(repo_id: str) -> bool:
    """Quick probe, only when the environment explicitly allows it (HF_HUB_OFFLINE=0)."""
    if os.environ.get("HF_HUB_OFFLINE", "1") not in ("0", "false", "False"):
        return False
    try:
        from huggingface_hub import model_info
        model_info(repo_id, timeout=3)
        return True
    except Exception:
        return False


def availability(spec: ModelSpec) -> dict:
    """{"available": bool, "reason": str}; never blocks long (offline checks unless HF_HUB_OFFLINE=0).

    A family that needs region features is available only when its feature extractor's pretrained
    weights are present too (no random stand-in is ever used)."""
    info = _weights_availability(spec)
    if info["available"] and spec.needs_features:
        from gpu_worker.features import backbone_status, detector_status

        status = backbone_status(spec.default_params.get("feature_backbone"))
        if spec.default_params.get("feature_extractor") == "detector":
            status = detector_status()
        if not status["available"]:
            return {"available": False, "reason": "Its image-region features cannot be computed: " + status["reason"]}
        info = {"available": True, "reason": info["reason"] + " Region features: " + status["reason"]}
    return info


def _weights_availability(spec: ModelSpec) -> dict:
    if spec.family == "baseline" or not spec.default_source:
        return {"available": True, "reason": "Trained from scratch; no download needed."}
    src = spec.default_source
    if os.path.isdir(src):
        return {"available": True, "reason": f"Weights found in the local folder {src}."}
    if os.path.isabs(src) or src.startswith("."):
        return {"available": False, "reason": f"The weights folder {src} does not exist on this server."}
    if _hf_cached(src):
        return {"available": True, "reason": f"{src} is in the local Hugging Face cache."}
    if _hub_reachable(src):
        return {"available": True, "reason": f"{src} can be downloaded from the Hugging Face Hub."}
    return {"available": False,
            "reason": f"The pretrained weights {src} are not on this server and the Hugging Face Hub "
                      f"cannot be reached. Ask an administrator to copy them into the model cache."}
