"""The baseline network in plain PyTorch, and its saved folder, without importing transformers.

Why a plain ``nn.Module``: the workers train, evaluate and serve baseline models, and importing
transformers' ``PreTrainedModel`` adds about 140 MB to every process that does (measured: 249 MB after
``import torch, transformers``, 388 MB after ``from transformers import PreTrainedModel``). At VQAv2 scale
that was what kept a training worker above its 800 MB budget.

The folder is still a Hugging Face one: :func:`save_folder` writes ``config.json`` with the keys
``save_pretrained`` writes (``architectures``, ``model_type``, ``dtype``, ``transformers_version``,
``id2label``/``label2id`` and the model's own fields) and ``model.safetensors`` with the same tensor names
and ``{"format": "pt"}`` metadata, so ``PiggyBaselineForVQA.from_pretrained(folder)`` (the transformers
class in :mod:`gpu_worker.models.baseline_hf`, which shares :class:`BaselineLayers` with :class:`BaselineNet`)
and ``AutoModel.from_pretrained(folder)`` load it; :func:`load_folder` reads folders written by either.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import metadata
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

MODEL_TYPE = "piggyback-baseline"
ARCHITECTURE = "PiggyBaselineForVQA"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

# The model's own fields and their defaults (the transformers config class takes the same).
FIELDS = {
    "question_encoder": "gru", "vocab_size": 2, "word_dim": 64, "hidden_size": 128, "image_size": 64,
    "cnn_channels": (32, 64, 64), "grid_size": 8, "glimpses": 2, "fusion_size": 256, "dropout": 0.1,
    "text_embed_dim": 384, "max_question_length": 32, "attention_size": 64, "stem_stride": 2,
}


def _labels(id2label, label2id) -> tuple[dict[int, str], dict[str, int]]:
    id2label = {int(k): v for k, v in (id2label or {}).items()}
    if not id2label and label2id:
        id2label = {int(i): a for a, i in label2id.items()}
    if not id2label:   # what transformers does for a config without labels: two generic ones
        id2label = {0: "LABEL_0", 1: "LABEL_1"}
    return id2label, {a: int(i) for i, a in id2label.items()}


class BaselineConfig:
    """The baseline's settings and answer vocabulary (the fields of :data:`FIELDS` + ``id2label``/``label2id``)."""

    model_type = MODEL_TYPE

    def __init__(self, id2label=None, label2id=None, **fields):
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown baseline settings: {', '.join(sorted(unknown))}")
        values = dict(FIELDS, **fields)
        if values["stem_stride"] not in (1, 2, 4):
            raise ValueError("stem_stride must be 1, 2 or 4")
        values["cnn_channels"] = list(values["cnn_channels"])
        for name, value in values.items():
            setattr(self, name, value)
        self.id2label, self.label2id = _labels(id2label, label2id)

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    def to_dict(self) -> dict:
        d = {name: getattr(self, name) for name in FIELDS}
        d["cnn_channels"] = list(d["cnn_channels"])
        d["id2label"], d["label2id"] = dict(self.id2label), dict(self.label2id)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "BaselineConfig":
        """From a ``config.json`` dict: transformers' own keys (``architectures``, ``dtype``, ...) are ignored."""
        return cls(id2label=d.get("id2label"), label2id=d.get("label2id"),
                   **{k: v for k, v in d.items() if k in FIELDS})


@dataclass
class BaselineOutput:
    loss: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None
    attentions: Optional[torch.Tensor] = None   # (questions, glimpses, grid*grid)


class BaselineLayers:
    """The layers and the forward pass, shared by :class:`BaselineNet` and the transformers class."""

    def _build_layers(self, c) -> None:
        # stem: 3x3 conv (stride 1) or a k x k "patchify" conv with stride k; then 3x3 conv blocks with
        # 2x2 max-pooling until the map is grid_size x grid_size (an adaptive pool handles the rest)
        s = int(c.stem_stride)
        k, pad = (3, 1) if s == 1 else (s, 0)
        ch = list(c.cnn_channels)
        layers = [nn.Conv2d(3, ch[0], k, stride=s, padding=pad, bias=False), nn.BatchNorm2d(ch[0]), nn.ReLU(inplace=True)]
        size = c.image_size // s
        for cin, cout in zip(ch[:-1], ch[1:]):
            if size >= 2 * c.grid_size:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.image_encoder = nn.Sequential(*layers)
        self.grid_pool = nn.AdaptiveAvgPool2d(c.grid_size)
        if c.question_encoder == "minilm":
            self.embed = None
            self.text_proj = nn.Sequential(nn.Linear(c.text_embed_dim, c.hidden_size), nn.ReLU())
        else:
            self.embed = nn.Embedding(c.vocab_size, c.word_dim, padding_idx=0)
            if c.question_encoder == "gru":
                self.rnn = nn.GRU(c.word_dim, c.hidden_size, batch_first=True)
            elif c.question_encoder == "bow":
                self.bow = nn.Sequential(nn.Linear(c.word_dim, c.hidden_size), nn.ReLU(),
                                         nn.Linear(c.hidden_size, c.hidden_size), nn.ReLU())
            else:
                raise ValueError(f"unknown question_encoder {c.question_encoder!r}")
        cdim = c.cnn_channels[-1]
        self.att_v = nn.Linear(cdim, c.attention_size)
        self.att_q = nn.Linear(c.hidden_size, c.attention_size)
        self.att_out = nn.Linear(c.attention_size, c.glimpses)
        self.fuse_v = nn.Linear(cdim * c.glimpses, c.fusion_size)
        self.fuse_q = nn.Linear(c.hidden_size, c.fusion_size)
        self.classifier = nn.Sequential(nn.Linear(c.fusion_size, c.fusion_size), nn.ReLU(),
                                        nn.Dropout(c.dropout), nn.Linear(c.fusion_size, c.num_labels))

    @staticmethod
    def _reset(module) -> None:
        # PyTorch's own initialisation (Kaiming-uniform) trains this small CNN from scratch best.
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding, nn.GRU, nn.BatchNorm2d)):
            module.reset_parameters()

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """uint8 or float (N, 3, S, S) -> cell features (N, grid*grid, C)."""
        x = pixel_values
        if x.dtype == torch.uint8:
            x = x.float().div_(127.5).sub_(1.0)
        feats = self.image_encoder(x)
        if feats.shape[-2:] != (self.config.grid_size, self.config.grid_size):
            feats = self.grid_pool(feats)
        return feats.flatten(2).transpose(1, 2)

    def encode_questions(self, input_ids=None, attention_mask=None, question_embeds=None) -> torch.Tensor:
        kind = self.config.question_encoder
        if kind == "minilm":
            return self.text_proj(question_embeds)
        emb = self.embed(input_ids)
        if attention_mask is None:
            attention_mask = (input_ids != 0).long()
        if kind == "gru":
            out, _ = self.rnn(emb)   # right padding: the state at the last real token is exact
            last = attention_mask.sum(1).clamp(min=1) - 1
            return out[torch.arange(out.size(0), device=out.device), last]
        m = attention_mask.unsqueeze(-1).to(emb.dtype)
        return self.bow((emb * m).sum(1) / m.sum(1).clamp(min=1.0))

    def _vqa_forward(self, pixel_values=None, input_ids=None, attention_mask=None, image_index=None,
                     question_embeds=None, question_index=None, labels=None, image_features=None,
                     output_attentions=None):
        """One row per question. ``image_index[b]`` names the row of ``pixel_values`` (each image once)
        and ``question_index[b]`` the row of ``input_ids``/``question_embeds`` (each distinct text once);
        both default to the identity. Returns (loss, logits, attentions)."""
        cells = image_features if image_features is not None else self.encode_images(pixel_values)
        q = self.encode_questions(input_ids, attention_mask, question_embeds)
        if question_index is not None:
            q = q[question_index]
        if image_index is None:
            if cells.size(0) != q.size(0):
                raise ValueError("image_index is required when images and questions differ in number")
            image_index = torch.arange(q.size(0), device=q.device)
        v_proj = self.att_v(cells)                                            # (N, G, H) once per image
        h = torch.tanh(v_proj[image_index] + self.att_q(q).unsqueeze(1))     # (B, G, H)
        att = torch.softmax(self.att_out(h), dim=1).transpose(1, 2)          # (B, glimpses, G)
        attended = torch.bmm(att, cells[image_index]).flatten(1)             # (B, glimpses*C)
        fused = F.relu(self.fuse_v(attended)) * F.relu(self.fuse_q(q))
        logits = self.classifier(fused)
        loss = None
        if labels is not None:
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="sum") / logits.size(0)
        return loss, logits, (att if output_attentions is not False else None)


class BaselineNet(BaselineLayers, nn.Module):
    """The baseline as a plain module: what the workers train and run."""

    def __init__(self, config: BaselineConfig):
        nn.Module.__init__(self)
        self.config = config
        self._build_layers(config)
        self.apply(self._reset)   # as the transformers class's post_init does: same weights for the same seed

    def forward(self, pixel_values=None, input_ids=None, attention_mask=None, image_index=None,
                question_embeds=None, question_index=None, labels=None, image_features=None,
                output_attentions=None, **kwargs) -> BaselineOutput:
        return BaselineOutput(*self._vqa_forward(pixel_values, input_ids, attention_mask, image_index,
                                                 question_embeds, question_index, labels, image_features,
                                                 output_attentions))


def _transformers_version() -> str:
    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError:   # pragma: no cover - transformers is a required package
        return "unknown"


def config_json(config: BaselineConfig, dtype: torch.dtype = torch.float32) -> dict:
    """The ``config.json`` dict ``save_pretrained`` writes for this configuration (keys sorted)."""
    d = config.to_dict()
    d["id2label"] = {str(i): a for i, a in d["id2label"].items()}
    d.update(architectures=[ARCHITECTURE], model_type=MODEL_TYPE, dtype=str(dtype).replace("torch.", ""),
             transformers_version=_transformers_version())
    return dict(sorted(d.items()))


def save_folder(model: nn.Module, folder: str) -> None:
    """Write ``config.json`` and ``model.safetensors`` of a :class:`BaselineNet` (see the module docstring)."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    dtype = next((v.dtype for v in state.values() if v.is_floating_point()), torch.float32)
    with open(os.path.join(folder, CONFIG_FILE), "w", encoding="utf-8") as fh:
        json.dump(config_json(model.config, dtype), fh, indent=2)
        fh.write("\n")
    save_file(state, os.path.join(folder, WEIGHTS_FILE), metadata={"format": "pt"})


def load_folder(folder: str) -> BaselineNet:
    """A :class:`BaselineNet` from a folder written by :func:`save_folder` or by ``save_pretrained``."""
    from safetensors.torch import load_file

    with open(os.path.join(folder, CONFIG_FILE), encoding="utf-8") as fh:
        d = json.load(fh)
    if d.get("model_type") != MODEL_TYPE:
        raise ValueError(f"{folder} holds a {d.get('model_type')!r} model, not a PiggyBack baseline")
    model = BaselineNet(BaselineConfig.from_dict(d))
    model.load_state_dict(load_file(os.path.join(folder, WEIGHTS_FILE)))
    return model.eval()
