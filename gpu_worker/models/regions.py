"""Shared by the region-feature families (VisualBERT, LXMERT): the extractor, cached features, the adapter base.

Images become region features once (``gpu_worker.features``: a pretrained CNN grid, or torchvision
Faster R-CNN regions when installed) and are cached by image content. The extractor used is saved
beside the fine-tuned model and recorded (name, weights) in ``piggyback.json``.
"""
from __future__ import annotations

import os

import torch

from gpu_worker import UserFacingError
from gpu_worker import features as F
from gpu_worker.models import hf_common as hc
from gpu_worker.models.hf_base import HFAdapter, bert_tokenizer


def build_extractor(params: dict, dim: int, device):
    """The region-feature extractor named by ``params`` (never a silent substitute).

    ``feature_extractor``: "grid" (a pretrained ResNet, ``feature_backbone`` or the server default) or
    "detector" (torchvision Faster R-CNN). When the chosen one's weights are missing this raises a
    :class:`UserFacingError` saying so; a test names a tiny random backbone folder explicitly.
    """
    kind = params.get("feature_extractor", "grid")
    if kind == "detector":
        status = F.detector_status()
        if not status["available"]:
            raise UserFacingError("The object-detector region features are not available: " + status["reason"])
        return F.make_extractor("detector", dim=dim, device=device)
    backbone = params.get("feature_backbone") or F.default_backbone()
    status = F.backbone_status(backbone)
    if not status["available"]:
        raise UserFacingError("This model needs region features, but " + status["reason"])
    return F.make_extractor(kind, backbone=backbone, grid=int(params.get("feature_grid", 6)), dim=dim,
                            device=device)


def region_features(extractor, items, image_root, cache_dir):
    """Unique images -> padded (I, N, D) features, (I, N, 4) boxes, (I, N) mask, sizes, per-item index."""
    index, paths = {}, []
    for it in items:
        if it["image"] not in index:
            index[it["image"]] = len(paths)
            paths.append(it["image"])
    full = [p if os.path.isabs(p) else os.path.join(image_root or "", p) for p in paths]
    res = F.extract_features(full, extractor, cache_dir=cache_dir)
    n = max(r["features"].shape[0] for r in res)
    feats = torch.zeros(len(res), n, extractor.dim)
    boxes = torch.zeros(len(res), n, 4)
    mask = torch.zeros(len(res), n, dtype=torch.long)
    for i, r in enumerate(res):
        k = r["features"].shape[0]
        feats[i, :k], boxes[i, :k], mask[i, :k] = r["features"], r["boxes"], 1
    return {"feats": feats, "boxes": boxes, "vmask": mask, "sizes": [r["size"] for r in res],
            "img_idx": torch.tensor([index[it["image"]] for it in items], dtype=torch.long)}


class RegionAdapter(HFAdapter):
    """A BERT-tokenised classifier over region features; subclasses name the model class and the head."""

    def __init__(self, spec, model, tokenizer, extractor, device=None, params=None):
        super().__init__(spec, device, params)
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        self.extractor = extractor
        self.id2label = {int(k): v for k, v in model.config.id2label.items()}
        self.label2id = {v: k for k, v in self.id2label.items()}
        self.max_text = min(40, int(model.config.max_position_embeddings))

    @classmethod
    def model_class(cls):
        raise NotImplementedError

    @classmethod
    def visual_dim(cls, config) -> int:
        raise NotImplementedError

    @classmethod
    def resize_head(cls, model, answers: list[str], src: str) -> None:
        raise NotImplementedError

    @classmethod
    def from_source(cls, src, spec, device, params, items=None):
        model = cls.model_class().from_pretrained(src)
        tokenizer = bert_tokenizer(src)
        if items is not None:
            cls.resize_head(model, hc.build_answer_vocab(items, int(params.get("max_answers", 3129))), src)
        if items is None and os.path.isfile(os.path.join(str(src), F.EXTRACTOR_FILE)):
            extractor = F.load_extractor(src, device=device)   # the one this model was trained with
        else:
            extractor = build_extractor(params, cls.visual_dim(model.config), device)
        return cls(spec, model, tokenizer, extractor, device, params)

    def encode(self, items, image_root):
        enc = region_features(self.extractor, items, image_root, self.params.get("feature_cache_dir"))
        tok = self.tokenizer([it["question"] for it in items], truncation=True, max_length=self.max_text)
        enc["ids"] = [torch.tensor(x, dtype=torch.long) for x in tok["input_ids"]]
        if any(it.get("answers") for it in items):
            enc["targets"] = hc.soft_targets(items, self.label2id)
        return enc

    def save_extra(self, folder):
        self.extractor.save(folder)

    def piggyback_extra(self):
        return {"features": self.extractor.describe()}
