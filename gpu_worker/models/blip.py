"""BLIP VQA (``BlipForQuestionAnswering``, ``Salesforce/blip-vqa-base``): a generative answerer.

vision transformer -> question encoder (cross-attends to the image patches) -> answer decoder.
Usable zero-shot and fine-tunable (optionally with the vision encoder frozen). The three parts are
called directly rather than through ``forward()`` so that training and explanations share one path.

* Training target: the most frequent of the ten answers, decoded after the ``[DEC]`` start token.
* Prediction: beam search returns ``num_return_sequences`` candidates; each is re-scored with one
  teacher-forced decoder pass, so ``confidence`` is the sequence probability; candidates that
  normalise to the same answer pool their probability.
* Explanation: the question encoder's last cross-attention layer (B x H x T x (1 + patches)), mean
  over heads and question tokens, first position dropped, on the square patch grid of the image.
"""
from __future__ import annotations

import torch

from gpu_worker.models import hf_common as hc
from gpu_worker.models.base import ModelSpec
from gpu_worker.models.hf_base import HFAdapter, majority_answer
from gpu_worker.models.registry import register

SPEC = register(ModelSpec(
    key="blip", family="blip", task="generate", default_source="Salesforce/blip-vqa-base",
    needs_features=False, can_explain=True, zero_shot=True, finetune_gpu_memory_gb=12.0,
    description="BLIP VQA (base, 385M parameters): writes its answer as text, so it can answer beyond your "
                "data set's answers. Works without training; fine-tuning adapts it to your answers.",
    adapter_path="gpu_worker.models.blip:BlipAdapter",
    default_params={"epochs": 5, "learning_rate": 2e-5, "batch_size": 16, "warmup_ratio": 0.1,
                    "weight_decay": 0.05, "val_fraction": 0.1, "patience": 2, "grad_accum_steps": 1,
                    "freeze_encoder": False, "seed": 0, "num_beams": 3, "max_new_tokens": 10}))


class BlipAdapter(HFAdapter):
    default_key = "blip"
    count_key = "q"

    def __init__(self, spec, model, processor, device=None, params=None):
        super().__init__(spec, device, params)
        self.model = model.to(self.device)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        tc = model.config.text_config
        self.bos, self.pad, self.eos = tc.bos_token_id, tc.pad_token_id, tc.sep_token_id

    @classmethod
    def from_source(cls, src, spec, device, params, items=None):
        from transformers import AutoProcessor, BlipForQuestionAnswering

        return cls(spec, BlipForQuestionAnswering.from_pretrained(src), AutoProcessor.from_pretrained(src),
                   device, params)

    # ---- encoding -------------------------------------------------------------------------
    def _pixels(self, images):
        return self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def _ids(self, texts):
        enc = self.tokenizer(texts, truncation=True, max_length=40)
        return [torch.tensor(x, dtype=torch.long) for x in enc["input_ids"]]

    def encode(self, items, image_root):
        paths, images, img_idx = hc.load_images(items, image_root)
        answers = self._ids([majority_answer(it) for it in items])
        for a in answers:
            a[0] = self.bos  # the decoder starts from [DEC], not [CLS]
        return {"pixels": self._pixels(images), "img_idx": img_idx, "sizes": [im.size for im in images],
                "q": self._ids([it["question"] for it in items]), "a": answers}

    def _collate(self, enc, idx):
        q = hc.pad_stack([enc["q"][i] for i in idx], self.pad)
        out = {"input_ids": q, "attention_mask": (q != self.pad).long(),
               "pixel_values": enc["pixels"][enc["img_idx"][idx]],
               "sizes": [enc["sizes"][int(enc["img_idx"][i])] for i in idx]}
        if "a" in enc:
            out["answer_ids"] = hc.pad_stack([enc["a"][i] for i in idx], self.pad)
        return out

    def _encode_question(self, batch, output_attentions=False):
        d = self.device
        image_embeds = self.model.vision_model(pixel_values=batch["pixel_values"].to(d)).last_hidden_state
        img_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=d)
        q = self.model.text_encoder(input_ids=batch["input_ids"].to(d), attention_mask=batch["attention_mask"].to(d),
                                    encoder_hidden_states=image_embeds, encoder_attention_mask=img_mask,
                                    output_attentions=output_attentions, return_dict=True)
        return q

    # ---- training -------------------------------------------------------------------------
    def training_loss(self, batch):
        d = self.device
        with hc.autocast(d):
            q = self._encode_question(batch).last_hidden_state
            ans = batch["answer_ids"].to(d)
            labels = ans.masked_fill(ans == self.pad, -100)
            out = self.model.text_decoder(input_ids=ans, attention_mask=(ans != self.pad).long(),
                                          encoder_hidden_states=q,
                                          encoder_attention_mask=batch["attention_mask"].to(d),
                                          labels=labels, reduction="mean", return_dict=True)
        return out.loss.float()

    def trainable_parameters(self):
        if self.params.get("freeze_encoder"):
            for p in self.model.vision_model.parameters():
                p.requires_grad_(False)
        return [p for p in self.model.parameters() if p.requires_grad]

    # ---- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, items, image_root, top_k=5, explain=False, batch_size=None, **gen):
        self.model.eval()
        settings = hc.gen_settings(self.params, gen, top_k)
        results = []
        for chunk in hc.chunks(items, int(batch_size or self.params.get("predict_batch_size", 16))):
            paths, images, img_idx = hc.load_images(chunk, image_root)
            enc = {"pixels": self._pixels(images), "img_idx": img_idx, "sizes": [im.size for im in images],
                   "q": self._ids([it["question"] for it in chunk])}
            # One batch per question length: transformers 5.23's BLIP text decoder drops the cross-attention
            # mask (BlipTextLayer passes it as ``attention_mask``, which BlipTextAttention ignores for
            # cross-attention), so padded questions would change the answer; unpadded groups answer exactly
            # like the one-question recipe.
            out: list = [None] * len(chunk)
            for idx in _same_length_groups(enc["q"]):
                for i, r in zip(idx, self._predict_batch(self._collate(enc, torch.tensor(idx)), top_k, explain,
                                                         settings)):
                    out[i] = r
            results.extend(out)
        return results

    def _predict_batch(self, batch, top_k, explain, settings):
        d = self.device
        with hc.autocast(d):
            qout = self._encode_question(batch, output_attentions=explain)
            q, qmask = qout.last_hidden_state, batch["attention_mask"].to(d)
            n = settings["num_return_sequences"]
            start = torch.full((q.shape[0], 1), self.bos, dtype=torch.long, device=d)
            seqs = self.model.text_decoder.generate(
                input_ids=start, eos_token_id=self.eos, pad_token_id=self.pad, encoder_hidden_states=q,
                encoder_attention_mask=qmask, num_beams=settings["num_beams"], num_return_sequences=n,
                max_new_tokens=settings["max_new_tokens"], do_sample=False)
            # exact sequence log-probabilities by one teacher-forced pass
            logits = self.model.text_decoder(
                input_ids=seqs, attention_mask=(seqs != self.pad).long(),
                encoder_hidden_states=q.repeat_interleave(n, 0),
                encoder_attention_mask=qmask.repeat_interleave(n, 0), return_dict=True).logits
        lp = hc.sequence_logprobs(logits[:, :-1], seqs[:, 1:], ignore_ids=[self.pad])
        texts = self.tokenizer.batch_decode(seqs, skip_special_tokens=True)
        res = []
        for b in range(q.shape[0]):
            ans, conf, top = hc.merge_candidates(texts[b * n:(b + 1) * n], lp[b * n:(b + 1) * n].tolist(), top_k)
            r = {"answer": ans, "confidence": conf, "top_k": top, "regions": []}
            if explain:
                att = qout.cross_attentions[-1][b].float().mean(0)             # (T, 1 + patches)
                m = batch["attention_mask"][b].to(att.device).float()
                scores = (att * m[:, None]).sum(0)[1:] / m.sum()
                side = hc.square_grid(scores.numel())
                r["regions"] = hc.grid_regions(scores.cpu(), side, side, batch["sizes"][b])
            res.append(r)
        return res


def _same_length_groups(seqs: list) -> list[list[int]]:
    """Indices of ``seqs`` grouped by length (groups in order of first appearance)."""
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(seqs):
        groups.setdefault(int(s.shape[0]), []).append(i)
    return list(groups.values())
