"""Florence-2 (``Florence2ForConditionalGeneration``, native in transformers 5): DaViT vision + BART.

The encoder input is ``1 + H*W`` image placeholder tokens followed by ``<s>question</s>``; the BART
decoder writes the answer. Zero-shot or fine-tuned; ``freeze_vision`` (or ``freeze_encoder``) keeps the
vision tower fixed, which roughly halves the memory needed.

* Prediction: beam candidates re-scored by one teacher-forced pass -> sequence probability.
* Explanation: the decoder's last cross-attention layer over the encoder positions of the image
  tokens (mean over heads and answer tokens), the first (pooled) image token dropped, on the H x W grid.

The default weights are ``florence-community/Florence-2-base-ft`` (the conversion of
``microsoft/Florence-2-base-ft`` to the native transformers format; the microsoft repository needs
``trust_remote_code``, which PiggyBack never enables).
"""
from __future__ import annotations

import contextlib

import torch

from gpu_worker.models import hf_common as hc
from gpu_worker.models.base import ModelSpec
from gpu_worker.models.hf_base import HFAdapter, majority_answer
from gpu_worker.models.registry import register

SPEC = register(ModelSpec(
    key="florence2", family="florence2", task="generate", default_source="florence-community/Florence-2-base-ft",
    needs_features=False, can_explain=True, zero_shot=True, finetune_gpu_memory_gb=10.0,
    description="Florence-2 base (230M parameters, Microsoft): a compact vision-language model that writes "
                "its answer; works without training and fine-tunes quickly (optionally with the vision part "
                "frozen).",
    adapter_path="gpu_worker.models.florence2:Florence2Adapter",
    default_params={"epochs": 5, "learning_rate": 1e-5, "batch_size": 16, "warmup_ratio": 0.1,
                    "weight_decay": 0.01, "val_fraction": 0.1, "patience": 2, "grad_accum_steps": 1,
                    "freeze_encoder": False, "freeze_vision": True, "seed": 0, "num_beams": 3,
                    "max_new_tokens": 10}))


class Florence2Adapter(HFAdapter):
    default_key = "florence2"
    count_key = "prompts"

    def __init__(self, spec, model, processor, device=None, params=None):
        super().__init__(spec, device, params)
        self.model = model.to(self.device)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.prompt = str(self.params.get("prompt") or "{q}")
        self.image_token = model.config.image_token_id
        self.num_image_tokens = int(processor.num_image_tokens)
        self.pad = self.tokenizer.pad_token_id

    @classmethod
    def from_source(cls, src, spec, device, params, items=None):
        from transformers import AutoProcessor, Florence2ForConditionalGeneration

        return cls(spec, Florence2ForConditionalGeneration.from_pretrained(src), AutoProcessor.from_pretrained(src),
                   device, params)

    # ---- encoding -------------------------------------------------------------------------
    def _prompt_ids(self, question):
        ids = self.tokenizer(self.prompt.format(q=question.strip()), truncation=True, max_length=64)["input_ids"]
        return torch.tensor([self.image_token] * self.num_image_tokens + ids, dtype=torch.long)

    def _pixels(self, images):
        return self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def encode(self, items, image_root):
        paths, images, img_idx = hc.load_images(items, image_root)
        answers = [torch.tensor(self.tokenizer(majority_answer(it), truncation=True, max_length=32)["input_ids"],
                                dtype=torch.long) for it in items]
        return {"pixels": self._pixels(images), "img_idx": img_idx, "sizes": [im.size for im in images],
                "prompts": [self._prompt_ids(it["question"]) for it in items], "answers": answers}

    def batches(self, encoded, batch_size, shuffle, generator=None):
        for idx in hc.index_batches(len(encoded["prompts"]), batch_size, shuffle, generator):
            ids = hc.pad_stack([encoded["prompts"][i] for i in idx], self.pad)
            yield {"input_ids": ids, "attention_mask": (ids != self.pad).long(),
                   "labels": hc.pad_stack([encoded["answers"][i] for i in idx], -100),
                   "pixel_values": encoded["pixels"][encoded["img_idx"][idx]]}

    # ---- training -------------------------------------------------------------------------
    def training_loss(self, batch):
        d = self.device
        with hc.autocast(d):
            out = self.model(input_ids=batch["input_ids"].to(d), attention_mask=batch["attention_mask"].to(d),
                             pixel_values=batch["pixel_values"].to(d), labels=batch["labels"].to(d))
        return out.loss.float()

    def trainable_parameters(self):
        if self.params.get("freeze_vision") or self.params.get("freeze_encoder"):
            for p in self.model.model.vision_tower.parameters():
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
            pixels = self._pixels(images)[img_idx].to(self.device)
            prompts = [self._prompt_ids(it["question"]) for it in chunk]
            results.extend(self._predict_batch(pixels, prompts, [images[i].size for i in img_idx.tolist()],
                                               top_k, explain, settings))
        return results

    def _predict_batch(self, pixels, prompts, sizes, top_k, explain, settings):
        d, n = self.device, settings["num_return_sequences"]
        ids = hc.pad_stack(prompts, self.pad).to(d)
        mask = (ids != self.pad).long()
        with hc.autocast(d):
            seqs = self.model.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels,
                                       num_beams=settings["num_beams"], num_return_sequences=n,
                                       max_new_tokens=settings["max_new_tokens"], do_sample=False)
            ctx = hc.eager_attention(self.model) if explain else contextlib.nullcontext()
            with ctx:
                out = self.model(input_ids=ids.repeat_interleave(n, 0), attention_mask=mask.repeat_interleave(n, 0),
                                 pixel_values=pixels.repeat_interleave(n, 0), decoder_input_ids=seqs,
                                 decoder_attention_mask=_decoder_mask(seqs, self.pad),
                                 output_attentions=explain)
        lp = hc.sequence_logprobs(out.logits[:, :-1], seqs[:, 1:], ignore_ids=[self.pad])
        texts = self.tokenizer.batch_decode(seqs, skip_special_tokens=True)
        res = []
        for b in range(len(prompts)):
            cand = lp[b * n:(b + 1) * n].tolist()
            ans, conf, top = hc.merge_candidates(texts[b * n:(b + 1) * n], cand, top_k)
            r = {"answer": ans, "confidence": conf, "top_k": top, "regions": []}
            if explain and out.cross_attentions:
                best = b * n + max(range(n), key=lambda j: cand[j])
                att = out.cross_attentions[-1][best].float().mean(0)          # (tgt, src)
                tmask = _decoder_mask(seqs[best:best + 1], self.pad)[0].float()
                img_pos = (ids[b] == self.image_token).nonzero().flatten()
                scores = (att[:, img_pos] * tmask[:, None]).sum(0)[1:]         # drop the pooled token
                side = hc.square_grid(scores.numel())
                r["regions"] = hc.grid_regions(scores.cpu(), side, side, sizes[b])
            res.append(r)
        return res


def _decoder_mask(seqs, pad):
    """1 up to and including the first end token; the decoder start token equals eos in BART, so only
    padding (which follows the end) is masked."""
    m = (seqs != pad).long()
    m[:, 0] = 1
    return m

