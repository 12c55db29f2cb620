"""ViLT (``ViltForQuestionAnswering``): answer classification with VQA soft targets.

* ``vilt``: fine-tune from ``dandelin/vilt-b32-mlm``; the classifier is sized to the answer vocabulary
  built from the training items.
* ``vilt-vqa``: ``dandelin/vilt-b32-finetuned-vqa``, usable zero-shot (its 3,129 VQA answers); when
  fine-tuned, rows of answers it already knows are copied into the new head.

Explanations: ViLT samples and shuffles image patches on every forward pass, so attention columns are
not grid positions. We call ``embeddings.visual_embed`` ourselves, keep its ``patch_index`` (row, col
of every image token) and pass the embeddings in as ``image_embeds=``; the [CLS] row of the last
layer's attention (mean over heads) is then scattered back onto the patch grid and turned into pixel
boxes of the original image.
"""
from __future__ import annotations

import torch

from gpu_worker.models import hf_common as hc
from gpu_worker.models.base import ModelSpec
from gpu_worker.models.hf_base import HFAdapter
from gpu_worker.models.registry import register

_PARAMS = {"epochs": 10, "learning_rate": 5e-5, "batch_size": 32, "warmup_ratio": 0.1, "weight_decay": 0.01,
           "val_fraction": 0.1, "patience": 3, "grad_accum_steps": 1, "freeze_encoder": False, "seed": 0}

VILT = register(ModelSpec(
    key="vilt", family="vilt", task="classify", default_source="dandelin/vilt-b32-mlm", needs_features=False,
    can_explain=True, zero_shot=False, finetune_gpu_memory_gb=6.0,
    description="ViLT (vision-and-language transformer over image patches, 87M parameters), fine-tuned as a "
                "classifier over the answers of your data set. Fast; needs a GPU to train well.",
    adapter_path="gpu_worker.models.vilt:ViltAdapter", default_params=dict(_PARAMS)))
VILT_VQA = register(ModelSpec(
    key="vilt-vqa", family="vilt", task="classify", default_source="dandelin/vilt-b32-finetuned-vqa",
    needs_features=False, can_explain=True, zero_shot=True, finetune_gpu_memory_gb=6.0,
    description="ViLT already fine-tuned on VQA v2 (3,129 common answers): answers questions about photos "
                "without training; can be fine-tuned further on your answers.",
    adapter_path="gpu_worker.models.vilt:ViltAdapter", default_params=dict(_PARAMS, epochs=5, learning_rate=2e-5)))


class ViltAdapter(HFAdapter):
    default_key = "vilt-vqa"

    def __init__(self, spec, model, processor, device=None, params=None):
        super().__init__(spec, device, params)
        self.model = model.to(self.device)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        cfg = model.config
        self.id2label = {int(k): v for k, v in cfg.id2label.items()}
        self.label2id = {v: k for k, v in self.id2label.items()}
        self.max_text = int(getattr(cfg, "max_position_embeddings", 40))

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def key_for_source(cls, src):
        """A hub id: the spec whose default weights these are (fine-tuned VQA head otherwise)."""
        return "vilt" if src == VILT.default_source else "vilt-vqa"

    @classmethod
    def from_source(cls, src, spec, device, params, items=None):
        from transformers import AutoProcessor, ViltForQuestionAnswering

        processor = AutoProcessor.from_pretrained(src)
        model = ViltForQuestionAnswering.from_pretrained(src)
        if items is not None:
            resize_classifier(model, hc.build_answer_vocab(items, int(params.get("max_answers", 3129))))
        return cls(spec, model, processor, device, params)

    # ---- encoding -------------------------------------------------------------------------
    def _pixels(self, images):
        out = []
        for im in images:
            enc = self.processor.image_processor(images=im, return_tensors="pt")
            out.append((enc["pixel_values"][0], enc["pixel_mask"][0]))
        return out

    def _tokens(self, questions):
        enc = self.tokenizer(questions, truncation=True, max_length=self.max_text)
        return [torch.tensor(x, dtype=torch.long) for x in enc["input_ids"]]

    def encode(self, items, image_root):
        paths, images, img_idx = hc.load_images(items, image_root)
        return {"pixels": self._pixels(images), "sizes": [im.size for im in images], "img_idx": img_idx,
                "ids": self._tokens([it["question"] for it in items]),
                "targets": hc.soft_targets(items, self.label2id)}

    def _collate(self, enc, idx):
        ids = hc.pad_stack([enc["ids"][i] for i in idx], self.tokenizer.pad_token_id)
        imgs = [enc["pixels"][int(enc["img_idx"][i])] for i in idx]
        hmax = max(p.shape[1] for p, _ in imgs)
        wmax = max(p.shape[2] for p, _ in imgs)
        pixel_values = torch.zeros(len(imgs), 3, hmax, wmax)
        pixel_mask = torch.zeros(len(imgs), hmax, wmax, dtype=torch.long)
        for j, (p, m) in enumerate(imgs):
            pixel_values[j, :, :p.shape[1], :p.shape[2]] = p
            pixel_mask[j, :m.shape[0], :m.shape[1]] = m
        return {"input_ids": ids, "attention_mask": (ids != self.tokenizer.pad_token_id).long(),
                "pixel_values": pixel_values, "pixel_mask": pixel_mask,
                "targets": enc["targets"][idx] if "targets" in enc else None,
                "sizes": [enc["sizes"][int(enc["img_idx"][i])] for i in idx]}

    # ---- training -------------------------------------------------------------------------
    def training_loss(self, batch):
        with hc.autocast(self.device):
            out = self.model(input_ids=batch["input_ids"].to(self.device),
                             attention_mask=batch["attention_mask"].to(self.device),
                             pixel_values=batch["pixel_values"].to(self.device),
                             pixel_mask=batch["pixel_mask"].to(self.device))
        targets = batch["targets"].to(self.device)
        # ViLT's own VQA objective: BCE over soft scores, scaled by the number of answers.
        return torch.nn.functional.binary_cross_entropy_with_logits(out.logits.float(), targets) * targets.shape[1]

    def trainable_parameters(self):
        if self.params.get("freeze_encoder"):
            for p in self.model.vilt.parameters():
                p.requires_grad_(False)
            return [p for p in self.model.classifier.parameters() if p.requires_grad]
        return [p for p in self.model.parameters() if p.requires_grad]

    # ---- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, items, image_root, top_k=5, explain=False, batch_size=None, **gen):
        self.model.eval()
        results = []
        for chunk in hc.chunks(items, int(batch_size or self.params.get("predict_batch_size", 32))):
            paths, images, img_idx = hc.load_images(chunk, image_root)
            enc = {"pixels": self._pixels(images), "sizes": [im.size for im in images], "img_idx": img_idx,
                   "ids": self._tokens([it["question"] for it in chunk])}
            batch = self._collate(enc, torch.arange(len(chunk)))
            results.extend(self._predict_batch(batch, top_k, explain))
        return results

    def _predict_batch(self, batch, top_k, explain):
        dev = self.device
        ids, mask = batch["input_ids"].to(dev), batch["attention_mask"].to(dev)
        pv, pm = batch["pixel_values"].to(dev), batch["pixel_mask"].to(dev)
        with hc.autocast(dev):
            if not explain:
                logits = self.model(input_ids=ids, attention_mask=mask, pixel_values=pv, pixel_mask=pm).logits
            else:
                emb = self.model.vilt.embeddings
                x, x_mask, (patch_index, (gh, gw)) = emb.visual_embed(
                    pv, pm, max_image_length=self.model.config.max_image_length)
                out = self.model(input_ids=ids, attention_mask=mask, image_embeds=x, pixel_mask=x_mask,
                                 output_attentions=True)
                logits = out.logits
        probs = torch.sigmoid(logits.float() / self.temperature)
        tops = hc.topk_from_probs(probs, self.id2label, top_k)
        res = [{"answer": t[0]["answer"], "confidence": t[0]["score"], "top_k": t, "regions": []} for t in tops]
        if explain:
            patch = self.model.config.patch_size
            t_len = ids.shape[1]
            att = out.attentions[-1].float().mean(1)[:, 0, t_len + 1:]  # [CLS] -> image tokens (skip image CLS)
            valid = x_mask[:, 1:].float()
            for b, r in enumerate(res):
                grid = torch.zeros(gh, gw, device=att.device)
                pi = patch_index[b]
                grid.index_put_((pi[:, 0], pi[:, 1]), att[b] * valid[b], accumulate=True)
                mh = float(batch["pixel_mask"][b].sum(0).max()) / patch  # covered cells (height)
                mw = float(batch["pixel_mask"][b].sum(1).max()) / patch  # covered cells (width)
                r["regions"] = hc.grid_regions(grid, gh, gw, batch["sizes"][b], covered_wh=(mw, mh))
        return res


def resize_classifier(model, answers: list[str]) -> None:
    """Make the classifier predict exactly ``answers``; rows of answers the old head knew are kept."""
    last = model.classifier[-1]
    known = hc.pretrained_answers(model.config) if len(model.config.id2label) == last.out_features else {}
    model.classifier[-1] = hc.resize_answer_rows(last, known, answers)
    hc.set_answer_labels(model.config, answers)
    model.config.num_labels = len(answers)
    model.num_labels = len(answers)

