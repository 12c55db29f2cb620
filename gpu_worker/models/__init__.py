"""Model families (one file each) behind one adapter interface; see ``base.py`` and ``registry.py``."""
from gpu_worker.models.base import ModelSpec, VQAAdapter
from gpu_worker.models.registry import (
    DEFAULT_MODEL_KEY,
    PARAM_LIMITS,
    PRESETS,
    all_specs,
    availability,
    get_adapter_class,
    get_spec,
    register,
    resolve_params,
    validate_params,
)

__all__ = [
    "ModelSpec", "VQAAdapter", "DEFAULT_MODEL_KEY", "PARAM_LIMITS", "PRESETS", "all_specs",
    "availability", "get_adapter_class", "get_spec", "register", "resolve_params", "validate_params",
]
