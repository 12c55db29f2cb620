"""VisualBERT (``VisualBertForQuestionAnswering``) over cached region features.

Images become region features once (``gpu_worker.features``: a CNN grid by default, torchvision
Faster R-CNN regions when available) and are cached by image content. The text tokens and the visual
tokens share one BERT encoder; the classifier reads the last question token (as in the original
code). Explanation: last-layer attention from that token to the visual tokens (mean over heads),
``attentions[-1][:, :, q, T:]``, one score per region box.
"""
from __future__ import annotations

import torch

from gpu_worker.models import hf_common as hc
from gpu_worker.models.base import ModelSpec
from gpu_worker.models.regions import RegionAdapter
from gpu_worker.models.registry import register

SPEC = register(ModelSpec(
    key="visualbert", family="visualbert", task="classify", default_source="uclanlp/visualbert-vqa-coco-pre",
    needs_features=True, can_explain=True, zero_shot=False, finetune_gpu_memory_gb=8.0,
    description="VisualBERT (BERT reading the question together with image-region features). Regions come "
                "from a CNN grid (or an object detector when installed); features are cached per image.",
    adapter_path="gpu_worker.models.visualbert:VisualBertAdapter",
    default_params={"epochs": 10, "learning_rate": 3e-5, "batch_size": 32, "warmup_ratio": 0.1,
                    "weight_decay": 0.01, "val_fraction": 0.1, "patience": 3, "grad_accum_steps": 1,
                    "freeze_encoder": False, "seed": 0, "feature_extractor": "grid", "feature_grid": 6}))

class VisualBertAdapter(RegionAdapter):
    default_key = "visualbert"

    @classmethod
    def model_class(cls):
        from transformers import VisualBertForQuestionAnswering

        return VisualBertForQuestionAnswering

    @classmethod
    def visual_dim(cls, config):
        return config.visual_embedding_dim

    @classmethod
    def resize_head(cls, model, answers, src):
        """The pretraining checkpoint has no answer head: a fresh one over ``answers``."""
        model.cls = torch.nn.Linear(model.config.hidden_size, len(answers))
        model.num_labels = len(answers)
        hc.set_answer_labels(model.config, answers)

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
            tops = hc.topk_from_probs(torch.sigmoid(out.logits.float() / self.temperature), self.id2label, top_k)
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
