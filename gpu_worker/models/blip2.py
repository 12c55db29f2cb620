"""BLIP-2 (``Blip2ForConditionalGeneration``): frozen ViT + Q-Former + frozen language model.

Prompt ``Question: {q} Answer:``; the processor puts ``num_query_tokens`` image placeholder tokens
in front of it and the model swaps in the Q-Former outputs there. Zero-shot by default; fine-tuning
trains only the Q-Former, its query tokens and the language projection (the LM and ViT stay frozen).

* Prediction: beam candidates re-scored by one teacher-forced pass -> sequence probability.
* Explanation: ``forward()`` returns no Q-Former cross-attentions, so the vision model and the
  Q-Former are called directly with ``output_attentions=True``; the last cross-attention layer
  (B x H x queries x (1 + patches)), mean over heads and queries, first position dropped, gives the
  patch-grid scores. (The Q-Former does not read the question, so these say what the model looked at
  for this image.)
"""
from __future__ import annotations

import torch

from gpu_worker.models import hf_common as hc
from gpu_worker.models.base import ModelSpec
from gpu_worker.models.hf_base import HFAdapter, majority_answer
from gpu_worker.models.registry import register

PROMPT = "Question: {q} Answer:"

SPEC = register(ModelSpec(
    key="blip2", family="blip2", task="generate", default_source="Salesforce/blip2-opt-2.7b",
    needs_features=False, can_explain=True, zero_shot=True, finetune_gpu_memory_gb=24.0,
    description="BLIP-2 (ViT + Q-Former + OPT-2.7B language model, 3.8B parameters): strong zero-shot "
                "answers; fine-tuning trains only the small Q-Former. Needs a large GPU.",
    adapter_path="gpu_worker.models.blip2:Blip2Adapter",
    default_params={"epochs": 3, "learning_rate": 1e-5, "batch_size": 8, "warmup_ratio": 0.1,
                    "weight_decay": 0.05, "val_fraction": 0.1, "patience": 1, "grad_accum_steps": 4,
                    "freeze_encoder": True, "seed": 0, "num_beams": 3, "max_new_tokens": 10}))


class Blip2Adapter(HFAdapter):
    default_key = "blip2"
    count_key = "prompts"

    def __init__(self, spec, model, processor, device=None, params=None):
        super().__init__(spec, device, params)
        self.model = model.to(self.device)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.prompt = str(self.params.get("prompt") or PROMPT)
        self.image_token = model.config.image_token_id
        self.num_query = model.config.num_query_tokens
        self.pad = self.tokenizer.pad_token_id
        # the checkpoint's stop tokens (OPT: the newline, 50118), first one ends every training answer
        self.stops = hc.stop_token_ids(model, self.tokenizer.eos_token_id)
        self.eos = self.stops[0]

    @classmethod
    def from_source(cls, src, spec, device, params, items=None):
        from transformers import AutoProcessor, Blip2ForConditionalGeneration

        dev = torch.device(device) if device else None
        dtype = torch.float16 if (dev and dev.type == "cuda") or (dev is None and torch.cuda.is_available()) \
            else torch.float32
        model = Blip2ForConditionalGeneration.from_pretrained(src, dtype=dtype)
        # the trainable part stays fp32 (GradScaler cannot unscale fp16 gradients); autocast runs it in
        # bf16/fp16 on the GPU anyway
        model.qformer.float()
        model.language_projection.float()
        model.query_tokens.data = model.query_tokens.data.float()
        return cls(spec, model, AutoProcessor.from_pretrained(src), device, params)

    # ---- encoding -------------------------------------------------------------------------
    def _prompt_ids(self, question):
        ids = self.tokenizer(self.prompt.format(q=question.strip()), truncation=True, max_length=64)["input_ids"]
        return torch.tensor([self.image_token] * self.num_query + ids, dtype=torch.long)

    def encode(self, items, image_root):
        paths, images, img_idx = hc.load_images(items, image_root)
        prompts = [self._prompt_ids(it["question"]) for it in items]
        answers = [torch.tensor(self.tokenizer(" " + majority_answer(it), add_special_tokens=False)["input_ids"]
                                + [self.eos], dtype=torch.long) for it in items]
        return {"pixels": self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"],
                "img_idx": img_idx, "sizes": [im.size for im in images], "prompts": prompts, "answers": answers}

    def batches(self, encoded, batch_size, shuffle, generator=None):
        for idx in hc.index_batches(len(encoded["prompts"]), batch_size, shuffle, generator):
            ids = [torch.cat([encoded["prompts"][i], encoded["answers"][i]]) for i in idx]
            labels = [torch.cat([torch.full_like(encoded["prompts"][i], -100), encoded["answers"][i]]) for i in idx]
            input_ids = hc.pad_stack(ids, self.pad)
            mask = hc.pad_stack([torch.ones_like(x) for x in ids], 0)
            yield {"input_ids": input_ids, "attention_mask": mask, "labels": hc.pad_stack(labels, -100),
                   "pixel_values": encoded["pixels"][encoded["img_idx"][idx]]}

    # ---- training -------------------------------------------------------------------------
    def training_loss(self, batch):
        d = self.device
        with hc.autocast(d):
            out = self.model(pixel_values=batch["pixel_values"].to(d, self.model.dtype),
                             input_ids=batch["input_ids"].to(d), attention_mask=batch["attention_mask"].to(d),
                             labels=batch["labels"].to(d))
        return out.loss.float()

    def trainable_parameters(self):
        """Q-Former only: the query tokens, the Q-Former and the projection into the language model."""
        for p in self.model.parameters():
            p.requires_grad_(False)
        keep = [self.model.query_tokens, *self.model.qformer.parameters(),
                *self.model.language_projection.parameters()]
        for p in keep:
            p.requires_grad_(True)
        return keep

    # ---- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, items, image_root, top_k=5, explain=False, batch_size=None, **gen):
        self.model.eval()
        settings = hc.gen_settings(self.params, gen, top_k)
        results = []
        for chunk in hc.chunks(items, int(batch_size or self.params.get("predict_batch_size", 8))):
            paths, images, img_idx = hc.load_images(chunk, image_root)
            pixels = self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
            pixels = pixels[img_idx].to(self.device, self.model.dtype)
            prompts = [self._prompt_ids(it["question"]) for it in chunk]
            results.extend(self._predict_batch(pixels, prompts, [images[i].size for i in img_idx.tolist()],
                                               top_k, explain, settings))
        return results

    def _predict_batch(self, pixels, prompts, sizes, top_k, explain, settings):
        d, n = self.device, settings["num_return_sequences"]
        ids = hc.pad_stack(prompts, self.pad, left=True).to(d)
        mask = hc.pad_stack([torch.ones_like(p) for p in prompts], 0, left=True).to(d)
        with hc.autocast(d):
            out = self.model.generate(pixel_values=pixels, input_ids=ids, attention_mask=mask,
                                      num_beams=settings["num_beams"], num_return_sequences=n,
                                      max_new_tokens=settings["max_new_tokens"], do_sample=False,
                                      pad_token_id=self.pad)
            new = out[:, ids.shape[1]:] if out.shape[1] > ids.shape[1] else out[:, :0]
            new = hc.cut_after_stop(new, self.stops, self.pad)
            full = torch.cat([ids.repeat_interleave(n, 0), new], 1)
            fmask = torch.cat([mask.repeat_interleave(n, 0), (new != self.pad).long()], 1)
            logits = self.model(pixel_values=pixels.repeat_interleave(n, 0), input_ids=full,
                                attention_mask=fmask).logits
        logits = logits[:, -full.shape[1]:]
        lp = hc.sequence_logprobs(logits[:, ids.shape[1] - 1:-1], new, ignore_ids=[self.pad])
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        grids = self._explain(pixels) if explain else None
        res = []
        for b in range(len(prompts)):
            ans, conf, top = hc.merge_candidates(texts[b * n:(b + 1) * n], lp[b * n:(b + 1) * n].tolist(), top_k)
            r = {"answer": ans, "confidence": conf, "top_k": top, "regions": []}
            if grids is not None:
                side = hc.square_grid(grids.shape[1])
                r["regions"] = hc.grid_regions(grids[b].cpu(), side, side, sizes[b])
            res.append(r)
        return res

    def _explain(self, pixels):
        with hc.autocast(self.device), hc.eager_attention(self.model):
            image_embeds = self.model.vision_model(pixel_values=pixels, return_dict=True).last_hidden_state
            img_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
            q = self.model.qformer(query_embeds=self.model.query_tokens.expand(pixels.shape[0], -1, -1),
                                   encoder_hidden_states=image_embeds, encoder_attention_mask=img_mask,
                                   output_attentions=True, return_dict=True)
        layers = [a for a in (q.cross_attentions or ()) if a is not None]
        if not layers:
            return None
        return layers[-1].float().mean(dim=(1, 2))[:, 1:]  # heads, queries; drop the image CLS position
