"""The adapter interface every model family implements (one family per file in this package).

A family file defines a ``VQAAdapter`` subclass and registers one or more :class:`ModelSpec` in
:mod:`gpu_worker.models.registry`. ``train.py`` and ``predict.py`` only talk to this interface:

* ``create`` builds a new model for fine-tuning (answer vocabulary from the items for classifiers,
  weights from ``source``/``spec.default_source`` when given);
* ``load`` restores a saved folder (``save`` writes a ``from_pretrained``-loadable folder plus
  ``piggyback.json`` naming the model key and family);
* ``encode`` pre-processes the items ONCE (tokenise, decode + resize images, cache) and ``batches``
  slices the encoded data; ``training_loss`` returns a scalar tensor for one batch;
* ``predict`` returns, per item, ``{"answer", "confidence", "top_k": [{"answer", "score"}],
  "regions": [{"box": [x0, y0, x1, y1], "score"}]}`` with boxes in ORIGINAL image pixels.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

# torch (~220 MB resident) is imported where it is used: a process that only reads the registry - an idle
# rqworker reaches it through the URLconf, and its cleaning jobs never need torch - stays small.
if TYPE_CHECKING:
    import torch

PIGGYBACK_FILE = "piggyback.json"


@dataclass(frozen=True)
class ModelSpec:
    key: str                      # "baseline-rnn", "vilt", "blip", ...
    family: str                   # "baseline", "vilt", "visualbert", "lxmert", "blip", "blip2", "florence2"
    task: str                     # "classify" | "generate"
    default_source: str           # hub id, local folder, or "" (from scratch)
    needs_features: bool          # needs extracted region features (VisualBERT, LXMERT)
    can_explain: bool
    zero_shot: bool               # usable without fine-tuning (needs weights)
    finetune_gpu_memory_gb: float
    description: str
    adapter_path: str             # "gpu_worker.models.baseline:BaselineAdapter" (lazy import)
    default_params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(device=None) -> torch.device:
    """``None``/"auto" -> CUDA when available, else CPU; strings and devices pass through."""
    import torch

    if device is None or device == "auto" or device == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return device if isinstance(device, torch.device) else torch.device(device)


def write_piggyback_json(folder: str, spec: ModelSpec, **extra) -> None:
    """Write ``piggyback.json`` = {"model_key", "family", "task", ...extra} into ``folder``."""
    data = {"model_key": spec.key, "family": spec.family, "task": spec.task}
    data.update(extra)
    with open(os.path.join(folder, PIGGYBACK_FILE), "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)


def read_piggyback_json(folder: str) -> dict:
    """The folder's ``piggyback.json`` as a dict, or {} when absent/unreadable."""
    path = os.path.join(str(folder), PIGGYBACK_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class VQAAdapter:
    """Base class of the per-family adapters. Subclasses override every method below."""

    spec: ModelSpec
    device: torch.device
    params: dict
    # How the family scores answers, for gpu_worker.calibration: "sigmoid" (one sigmoid per answer),
    # "softmax" (the baseline) - generative families ("generate") are told by spec.task.
    confidence_kind: str = "sigmoid"
    # The fitted calibration from piggyback.json (gpu_worker.calibration.calibrate), {} = none.
    calibration: dict = {}

    @property
    def temperature(self) -> float:
        """Classifier families divide their answer logits by this before the softmax / sigmoid."""
        c = self.calibration or {}
        return float(c.get("temperature") or 1.0) if c.get("method") == "temperature" else 1.0

    def __init__(self, spec: ModelSpec, device=None, params: dict | None = None):
        self.spec = spec
        self.device = resolve_device(device)
        self.params = dict(params or {})

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def create(cls, spec: ModelSpec, items: list, image_root: str, params: dict, source=None,
               device=None) -> "VQAAdapter":
        raise NotImplementedError(f"{cls.__name__}.create")

    @classmethod
    def load(cls, folder_or_hub_id: str, device=None, **opts) -> "VQAAdapter":
        raise NotImplementedError(f"{cls.__name__}.load")

    # ---- training -------------------------------------------------------------------------
    def encode(self, items: list, image_root: str) -> Any:
        raise NotImplementedError

    def batches(self, encoded: Any, batch_size: int, shuffle: bool,
                generator: torch.Generator | None = None) -> Iterable[Any]:
        raise NotImplementedError

    def num_batches(self, encoded: Any, batch_size: int) -> int:
        """How many batches ``batches`` yields (for progress/ETA and the LR schedule)."""
        return sum(1 for _ in self.batches(encoded, batch_size, shuffle=False, generator=None))

    def count_batches(self, items: list, batch_size: int) -> int:
        """``num_batches(encode(items), batch_size)`` without decoding any image (the schedule of a training
        that encodes its images window by window); one batch per ``batch_size`` questions by default."""
        return -(-len(items) // batch_size)

    def training_loss(self, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def trainable_parameters(self) -> Iterable[torch.nn.Parameter]:
        raise NotImplementedError

    def train(self, mode: bool = True) -> "VQAAdapter":
        """Switch the underlying module(s) to train/eval mode."""
        model = getattr(self, "model", None)
        if model is not None:
            model.train(mode)
        return self

    def eval(self) -> "VQAAdapter":
        return self.train(False)

    # ---- inference ------------------------------------------------------------------------
    def predict(self, items: list, image_root: str, top_k: int = 5, explain: bool = False,
                **gen) -> list[dict]:
        raise NotImplementedError

    # ---- persistence ----------------------------------------------------------------------
    def save(self, folder: str) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, sd: dict) -> None:
        self.model.load_state_dict(sd)
