"""Small helpers shared by the transformers families (vilt, visualbert, lxmert, blip, blip2, florence2).

Kept flat on purpose: answer vocabulary + VQA soft targets, image loading, autocast, patch-grid to
pixel boxes, sequence-probability ranking for generative models, and index batching.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections import Counter
from typing import Iterable

import torch
from PIL import Image

from gpu_worker.vqa_normalize import normalize_answer

MAX_REGIONS = 16


# ---- answers ----------------------------------------------------------------------------------
def build_answer_vocab(items: list, max_answers: int = 3129) -> list[str]:
    """Most frequent normalised answers (ties alphabetical), at most ``max_answers``."""
    counts = Counter()
    for it in items:
        for a in set(normalize_answer(x) for x in (it.get("answers") or [])):
            if a:
                counts[a] += 1
    if not counts:
        raise ValueError("No labelled answers in the training items: cannot build an answer vocabulary.")
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [a for a, _ in ranked[:max_answers]]


def vqa_soft_score(count: int) -> float:
    """Official VQA accuracy of an answer given by ``count`` of the ten annotators (0, .3, .6, .9, 1)."""
    return {0: 0.0, 1: 0.3, 2: 0.6, 3: 0.9}.get(count, 1.0)


def soft_targets(items: list, label2id: dict) -> torch.Tensor:
    """(N, num_labels) VQA soft-target matrix (answers outside the vocabulary are ignored)."""
    out = torch.zeros(len(items), len(label2id))
    for i, it in enumerate(items):
        answers = [normalize_answer(a) for a in (it.get("answers") or [])]
        scale = 10.0 / len(answers) if answers and len(answers) != 10 else 1.0
        for a, c in Counter(answers).items():
            if a in label2id:
                out[i, label2id[a]] = vqa_soft_score(int(round(c * scale)))
    return out


def pretrained_answers(config, folder: str | None = None) -> dict[str, int]:
    """{answer: row} of a checkpoint's answer head, {} when its labels carry no answer strings.

    ``config.id2label`` when it names the answers (not transformers' placeholder ``LABEL_<i>``), else a
    ``trainval_label2ans.json`` list beside the weights (how LXMERT's VQA answers are published)."""
    labels = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    if labels and not all(re.fullmatch(r"LABEL_\d+", v) for v in labels.values()):
        return {v: k for k, v in labels.items()}
    path = os.path.join(str(folder), "trainval_label2ans.json") if folder else ""
    if path and os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            names = json.load(fh)
        if isinstance(names, list):
            return {str(a): i for i, a in enumerate(names)}
    return {}


def resize_answer_rows(last: torch.nn.Linear, known: dict[str, int], answers: list[str],
                       init=None) -> torch.nn.Linear:
    """A new output layer for ``answers``: an answer the old head knew (by STRING) keeps its trained row,
    every other answer starts fresh (``init(layer)``, else torch's default initialisation)."""
    new = torch.nn.Linear(last.in_features, len(answers))
    if init is not None:
        init(new)
    new.to(device=last.weight.device, dtype=last.weight.dtype)
    with torch.no_grad():
        for i, a in enumerate(answers):
            j = known.get(a)
            if j is not None and j < last.out_features:
                new.weight[i] = last.weight[j]
                new.bias[i] = last.bias[j]
    return new


def set_answer_labels(config, answers: list[str]) -> None:
    config.id2label = {i: a for i, a in enumerate(answers)}
    config.label2id = {a: i for i, a in enumerate(answers)}


def topk_from_probs(probs: torch.Tensor, id2label: dict, k: int) -> list[list[dict]]:
    k = max(1, min(k, probs.shape[-1]))
    scores, idx = probs.float().topk(k, dim=-1)
    return [[{"answer": id2label[int(j)], "score": round(float(s), 6)} for s, j in zip(srow, irow)]
            for srow, irow in zip(scores, idx)]


# ---- images -----------------------------------------------------------------------------------
def open_image(image_root: str, rel: str) -> Image.Image:
    path = rel if os.path.isabs(rel) else os.path.join(image_root or "", rel)
    with Image.open(path) as im:
        return im.convert("RGB")


def load_images(items: list, image_root: str) -> tuple[list[str], list[Image.Image], torch.Tensor]:
    """Unique image paths, their PIL images, and per-item index into them (decode each image once)."""
    index: dict[str, int] = {}
    paths: list[str] = []
    for it in items:
        if it["image"] not in index:
            index[it["image"]] = len(paths)
            paths.append(it["image"])
    images = [open_image(image_root, p) for p in paths]
    return paths, images, torch.tensor([index[it["image"]] for it in items], dtype=torch.long)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (fp16 when bf16 is unsupported); nothing on CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


# ---- regions ----------------------------------------------------------------------------------
def grid_regions(scores: torch.Tensor, rows: int, cols: int, size_wh: tuple[int, int],
                 covered_wh: tuple[float, float] | None = None, limit: int = MAX_REGIONS) -> list[dict]:
    """Per-cell scores of a rows x cols grid -> top regions as pixel boxes of the ORIGINAL image.

    ``covered_wh`` is the part of the grid (in cells) that the image covers when the model's input was
    padded (ViLT); by default the grid covers the whole image. Scores are normalised to sum to 1.
    """
    w, h = size_wh
    cw, ch = covered_wh or (cols, rows)
    flat = scores.detach().float().reshape(-1).clamp_min(0)
    total = float(flat.sum()) or 1.0
    order = torch.argsort(flat, descending=True)[:limit]
    out = []
    for i in order.tolist():
        r, c = divmod(i, cols)
        x0, y0 = float(c * w / cw), float(r * h / ch)
        x1, y1 = float(min(w, (c + 1) * w / cw)), float(min(h, (r + 1) * h / ch))
        if x0 >= w or y0 >= h:
            continue
        out.append({"box": [round(x0, 1), round(y0, 1), round(x1, 1), round(y1, 1)],
                    "score": round(float(flat[i]) / total, 6)})
    return out


def box_regions(scores: torch.Tensor, boxes: torch.Tensor, limit: int = MAX_REGIONS) -> list[dict]:
    """Scores over pixel boxes (already original coordinates) -> top regions, scores summing to 1."""
    flat = scores.detach().float().reshape(-1).clamp_min(0)
    total = float(flat.sum()) or 1.0
    order = torch.argsort(flat, descending=True)[:limit]
    return [{"box": [round(float(v), 1) for v in boxes[i].tolist()], "score": round(float(flat[i]) / total, 6)}
            for i in order.tolist()]


@contextlib.contextmanager
def eager_attention(model):
    """Temporarily switch a model to eager attention (SDPA returns no attention weights)."""
    before = getattr(model.config, "_attn_implementation", None)
    if before in (None, "eager"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def square_grid(n: int) -> int:
    side = int(math.isqrt(n))
    if side * side != n:
        raise ValueError(f"{n} image tokens do not form a square grid")
    return side


# ---- generation -------------------------------------------------------------------------------
def merge_candidates(texts: list[str], logprobs: list[float], k: int) -> tuple[str, float, list[dict]]:
    """Generated candidates of one question -> (answer, confidence, top_k) after normalisation.

    Candidates that normalise to the same answer pool their sequence probabilities.
    """
    pooled: dict[str, float] = {}
    for t, lp in zip(texts, logprobs):
        a = normalize_answer(t)
        pooled[a] = pooled.get(a, 0.0) + math.exp(lp)
    if len(pooled) > 1:
        pooled.pop("", None)  # an empty generation is never the answer when there is another candidate
    ranked = sorted(pooled.items(), key=lambda kv: -kv[1])[:max(1, k)]
    top = [{"answer": a, "score": float(f"{min(1.0, p):.6g}")} for a, p in ranked]
    return top[0]["answer"], top[0]["score"], top


def sequence_logprobs(logits: torch.Tensor, targets: torch.Tensor, ignore_ids: Iterable[int]) -> torch.Tensor:
    """Sum of log-probabilities of ``targets`` (B, L) under ``logits`` (B, L, V), skipping ignored ids."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    tok = logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    mask = torch.ones_like(targets, dtype=torch.bool)
    for i in ignore_ids:
        if i is not None:
            mask &= targets != i
    mask &= targets >= 0
    return (tok * mask).sum(-1)


def stop_token_ids(model, fallback: int | None = None) -> list[int]:
    """The checkpoint's own stop tokens: ``generation_config.eos_token_id`` (an id or a list), else the
    text config's ``eos_token_id``, else ``fallback``. OPT-based BLIP-2 stops at the newline (50118), not
    at ``</s>``; PiggyBack must stop, train and cut where the checkpoint does."""
    for source in (getattr(model, "generation_config", None), getattr(model.config, "text_config", None),
                   model.config):
        ids = getattr(source, "eos_token_id", None) if source is not None else None
        if ids is not None:
            return [int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])]
    return [] if fallback is None else [int(fallback)]


def cut_after_stop(seqs: torch.Tensor, stop_ids: Iterable[int], pad: int) -> torch.Tensor:
    """Replace everything after the first stop token of each row by padding (the stop token stays)."""
    is_stop = torch.zeros_like(seqs, dtype=torch.bool)
    for i in stop_ids:
        is_stop |= seqs == int(i)
    seen = torch.cumsum(is_stop.long(), 1) - is_stop.long()
    return seqs.masked_fill(seen > 0, pad)


def gen_settings(params: dict, gen: dict, k: int) -> dict:
    """Beam width / answer length for one prediction call: the request's values, else the model's
    params, resolved and clamped by the registry's one resolver (``resolve_generation``); the beam is
    widened to return up to five candidates for top-k."""
    from gpu_worker.models.registry import resolve_generation

    merged = {name: gen.get(name) or params.get(name) for name in ("num_beams", "max_new_tokens")}
    resolved = resolve_generation(dict(merged, top_k=k), "generate")
    beams = max(resolved["num_beams"], min(resolved["top_k"], 5))
    return {"num_beams": beams, "num_return_sequences": max(1, min(resolved["top_k"], beams)),
            "max_new_tokens": resolved["max_new_tokens"]}


# ---- batching ---------------------------------------------------------------------------------
def index_batches(n: int, batch_size: int, shuffle: bool, generator: torch.Generator | None):
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for s in range(0, n, batch_size):
        yield order[s:s + batch_size]


def pad_stack(seqs: list[torch.Tensor], value: int, left: bool = False) -> torch.Tensor:
    width = max(int(s.shape[0]) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=seqs[0].dtype)
    for i, s in enumerate(seqs):
        if left:
            out[i, width - s.shape[0]:] = s
        else:
            out[i, :s.shape[0]] = s
    return out


def chunks(seq: list, size: int):
    for s in range(0, len(seq), max(1, size)):
        yield seq[s:s + size]
