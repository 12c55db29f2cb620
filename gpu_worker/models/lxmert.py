"""LXMERT (``LxmertForQuestionAnswering``): language encoder + object-relationship encoder + cross encoder.

Takes region features AND their positions: ``visual_feats`` from ``gpu_worker.features`` (cached per
image) and ``visual_pos`` = the region boxes normalised to 0..1 by the image size. The answer head is
resized to the answer vocabulary of the training items. Explanation: the last cross-modality layer's
language->vision attention (``cross_encoder_attentions[-1]``, B x H x T x N) from [CLS], mean over
heads: one score per region box.
"""
from __future__ import annotations

import os

import torch

from gpu_worker.models import hf_common as hc
from gpu_worker.models.base import ModelSpec
from gpu_worker.models.regions import RegionAdapter
from gpu_worker.models.registry import register

SPEC = register(ModelSpec(
    key="lxmert", family="lxmert", task="classify", default_source="unc-nlp/lxmert-base-uncased",
    needs_features=True, can_explain=True, zero_shot=False, finetune_gpu_memory_gb=10.0,
    description="LXMERT (separate language and vision encoders joined by cross-attention) over image-region "
                "features and their positions; features are cached per image.",
    adapter_path="gpu_worker.models.lxmert:LxmertAdapter",
    default_params={"epochs": 10, "learning_rate": 5e-5, "batch_size": 32, "warmup_ratio": 0.1,
                    "weight_decay": 0.01, "val_fraction": 0.1, "patience": 3, "grad_accum_steps": 1,
                    "freeze_encoder": False, "seed": 0, "feature_extractor": "grid", "feature_grid": 6}))


def resize_answer_head(model, answers: list[str], folder: str | None = None) -> None:
    """Size the answer head to ``answers`` BY STRING: answers in the checkpoint's label set keep their
    trained rows, new ones start fresh (transformers' ``resize_num_qa_labels`` keeps rows by POSITION,
    so new answer i would inherit pretrained answer i's weights)."""
    known = hc.pretrained_answers(model.config, folder)
    head = model.answer_head.logit_fc
    head[-1] = hc.resize_answer_rows(head[-1], known, answers, init=model._init_weights)
    model.config.num_qa_labels = model.num_qa_labels = len(answers)
    hc.set_answer_labels(model.config, answers)


class LxmertAdapter(RegionAdapter):
    default_key = "lxmert"

    @classmethod
    def model_class(cls):
        from transformers import LxmertForQuestionAnswering

        return LxmertForQuestionAnswering

    @classmethod
    def visual_dim(cls, config):
        return config.visual_feat_dim

    @classmethod
    def resize_head(cls, model, answers, src):
        resize_answer_head(model, answers, src if os.path.isdir(str(src)) else None)

    # ---- encoding -------------------------------------------------------------------------
    def encode(self, items, image_root):
        enc = super().encode(items, image_root)
        scale = torch.tensor([[w, h, w, h] for w, h in enc["sizes"]], dtype=torch.float).unsqueeze(1)
        enc["pos"] = (enc["boxes"] / scale).clamp(0, 1)   # LXMERT also reads where each region is
        return enc

    def _collate(self, enc, idx):
        ids = hc.pad_stack([enc["ids"][i] for i in idx], self.tokenizer.pad_token_id)
        img = enc["img_idx"][idx]
        return {"input_ids": ids, "attention_mask": (ids != self.tokenizer.pad_token_id).long(),
                "visual_feats": enc["feats"][img], "visual_pos": enc["pos"][img],
                "visual_attention_mask": enc["vmask"][img], "boxes": enc["boxes"][img],
                "targets": enc["targets"][idx] if "targets" in enc else None}

    def _forward(self, batch, output_attentions=False):
        d = self.device
        return self.model(input_ids=batch["input_ids"].to(d), attention_mask=batch["attention_mask"].to(d),
                          visual_feats=batch["visual_feats"].to(d), visual_pos=batch["visual_pos"].to(d),
                          visual_attention_mask=batch["visual_attention_mask"].to(d),
                          output_attentions=output_attentions)

    # ---- training -------------------------------------------------------------------------
    # Copied from gpu_worker.models.visualbert.VisualBertAdapter.training_loss with .logits->.question_answering_score
    def training_loss(self, batch):
        with hc.autocast(self.device):
            logits = self._forward(batch).question_answering_score
        targets = batch["targets"].to(self.device)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), targets) * targets.shape[1]

    # Copied from gpu_worker.models.visualbert.VisualBertAdapter.trainable_parameters with visual_bert->lxmert, cls->answer_head
    def trainable_parameters(self):
        if self.params.get("freeze_encoder"):
            for p in self.model.lxmert.parameters():
                p.requires_grad_(False)
            return list(self.model.answer_head.parameters())
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
            probs = torch.sigmoid(out.question_answering_score.float() / self.temperature)
            for b, t in enumerate(hc.topk_from_probs(probs, self.id2label, top_k)):
                r = {"answer": t[0]["answer"], "confidence": t[0]["score"], "top_k": t, "regions": []}
                if explain:
                    att = out.cross_encoder_attentions[-1][b].float().mean(0)[0].cpu()  # [CLS] -> regions
                    att = att * batch["visual_attention_mask"][b].float()
                    r["regions"] = hc.box_regions(att, batch["boxes"][b])
                results.append(r)
        return results
