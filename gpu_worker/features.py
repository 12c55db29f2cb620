"""Region features for VisualBERT and LXMERT, computed once per image and cached on disk.

Two extractors, both returning for every image ``{"features": (N, dim) float tensor,
"boxes": (N, 4) pixel boxes [x0, y0, x1, y1] in the ORIGINAL image, "size": (w, h)}``:

* :class:`GridExtractor` - a CNN backbone (a transformers ``ResNetModel`` from a hub id or local
  folder with its weights; there is NO random stand-in: without weights it refuses to start) pooled onto
  a ``grid x grid`` map; every cell is a region. Tests name a tiny random backbone folder explicitly
  (``gpu_worker.models.tiny.make_tiny_backbone``), and ``describe()`` says so. Channels are fitted to the model's visual dimension (zero-padded or
  group-averaged).
* :class:`DetectorExtractor` - torchvision Faster R-CNN (COCO) boxes + RoI features, only when
  torchvision imports AND its weights file is already on disk (``detector_status()`` says why not).

:func:`extract_features` caches each result under ``cache_dir/<extractor id>/<image sha256>.pt``,
so the same picture is never encoded twice by the same extractor (whatever its file name).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Callable

import torch
from PIL import Image

from gpu_worker import UserFacingError

DEFAULT_CACHE = os.environ.get("PIGGYBACK_FEATURE_CACHE",
                               os.path.join(os.path.expanduser("~"), ".cache", "piggyback", "features"))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EXTRACTOR_FILE = "extractor.json"
DETECTOR_WEIGHTS = "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _weights_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def fit_dim(x: torch.Tensor, dim: int) -> torch.Tensor:
    """(N, C) -> (N, dim): zero-pad when C < dim, average channel groups when C > dim."""
    c = x.shape[-1]
    if c == dim:
        return x
    if c < dim:
        return torch.nn.functional.pad(x, (0, dim - c))
    return torch.nn.functional.adaptive_avg_pool1d(x.unsqueeze(1), dim).squeeze(1)


def _to_tensor(img: Image.Image, size: int) -> torch.Tensor:
    im = img.convert("RGB").resize((size, size), Image.BICUBIC)
    t = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(size, size, 3).permute(2, 0, 1)
    t = t.float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (t - mean) / std


class GridExtractor:
    """CNN backbone -> ``grid x grid`` cell features; boxes are the cells in original pixels."""

    kind = "grid"

    def __init__(self, backbone: str | None = None, grid: int = 6, dim: int = 2048, image_size: int = 224,
                 seed: int = 0, device=None):
        from transformers import ResNetModel

        self.grid, self.dim, self.image_size, self.seed = int(grid), int(dim), int(image_size), int(seed)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if not backbone:
            raise UserFacingError("Region features need a CNN backbone with pretrained weights, and none was "
                                  "given: " + backbone_status()["reason"])
        try:
            self.model = ResNetModel.from_pretrained(backbone)
        except (OSError, ValueError) as exc:
            raise UserFacingError(f"The feature backbone {backbone} could not be loaded ({type(exc).__name__}); "
                                  "its weights are not on this server.") from None
        self.source = backbone
        self.test_only = is_test_checkpoint(backbone)
        self.model.to(self.device).eval()
        self.id = hashlib.sha256(json.dumps(
            {"kind": self.kind, "grid": self.grid, "dim": self.dim, "size": self.image_size,
             "config": self.model.config.to_dict().get("hidden_sizes"),
             "weights": _weights_digest(self.model)}, sort_keys=True).encode()).hexdigest()[:20]

    def describe(self) -> dict:
        return {"kind": self.kind, "backbone": self.source, "grid": self.grid, "dim": self.dim,
                "image_size": self.image_size, "seed": self.seed, "id": self.id,
                "name": f"ResNet grid {self.grid}x{self.grid}",
                "weights": ("random tiny test backbone (not pretrained)" if self.test_only
                            else f"pretrained: {self.source}")}

    @torch.no_grad()
    def __call__(self, images: list[Image.Image]) -> list[dict]:
        x = torch.stack([_to_tensor(im, self.image_size) for im in images]).to(self.device)
        fmap = self.model(pixel_values=x).last_hidden_state.float()          # (B, C, h, w)
        pooled = torch.nn.functional.adaptive_avg_pool2d(fmap, self.grid)  # (B, C, g, g)
        feats = pooled.flatten(2).transpose(1, 2)                         # (B, g*g, C)
        out = []
        for im, f in zip(images, feats):
            w, h = im.size
            cells = []
            for r in range(self.grid):
                for c in range(self.grid):
                    cells.append([c * w / self.grid, r * h / self.grid, (c + 1) * w / self.grid,
                                  (r + 1) * h / self.grid])
            out.append({"features": fit_dim(f.cpu(), self.dim), "boxes": torch.tensor(cells), "size": (w, h)})
        return out

    def save(self, folder: str) -> None:
        """Store the extractor beside a fine-tuned model (backbone weights unless it is a hub id)."""
        os.makedirs(folder, exist_ok=True)
        info = self.describe()
        if os.path.isdir(self.source):  # a local folder travels with the model; a hub id is re-downloaded
            sub = os.path.join(folder, "feature_backbone")
            self.model.save_pretrained(sub)
            info["backbone"] = "feature_backbone"
        with open(os.path.join(folder, EXTRACTOR_FILE), "w", encoding="utf-8") as fh:
            json.dump(info, fh, indent=2)


DEFAULT_BACKBONE = "microsoft/resnet-50"
TINY_MARKER = "piggyback_tiny.json"


def is_test_checkpoint(source: str) -> bool:
    """A folder written by ``gpu_worker.models.tiny`` (random weights, for tests only)."""
    return bool(source) and os.path.isfile(os.path.join(str(source), TINY_MARKER))


def default_backbone() -> str | None:
    """The grid extractor's backbone: ``PIGGYBACK_FEATURE_BACKBONE`` (hub id or folder), else
    microsoft/resnet-50 when its weights are in the local Hugging Face cache; None when neither."""
    env = os.environ.get("PIGGYBACK_FEATURE_BACKBONE")
    if env:
        return env
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(DEFAULT_BACKBONE, "config.json")
        weights = any(isinstance(try_to_load_from_cache(DEFAULT_BACKBONE, f), str)
                      for f in ("model.safetensors", "pytorch_model.bin"))
        return DEFAULT_BACKBONE if isinstance(found, str) and weights else None
    except Exception:
        return None


def backbone_status(backbone: str | None = None) -> dict:
    """{"available", "reason", "backbone"} for the grid extractor's pretrained CNN weights."""
    backbone = backbone or default_backbone()
    if not backbone:
        return {"available": False, "backbone": None,
                "reason": f"the region-feature backbone {DEFAULT_BACKBONE} is not in this server's Hugging Face "
                          "cache (or set PIGGYBACK_FEATURE_BACKBONE to a local ResNet folder)."}
    if os.path.isabs(backbone) and not os.path.isdir(backbone):
        return {"available": False, "backbone": backbone,
                "reason": f"the region-feature backbone folder {backbone} does not exist."}
    return {"available": True, "backbone": backbone, "reason": f"region features from {backbone}."}


def detector_status() -> dict:
    """{"available": bool, "reason": str, "weights": path|None} for the Faster R-CNN extractor."""
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # torchvision does not import beside this torch build
        return {"available": False, "reason": f"torchvision cannot be imported ({type(exc).__name__}).",
                "weights": None}
    path = os.path.join(torch.hub.get_dir(), "checkpoints", DETECTOR_WEIGHTS)
    if not os.path.isfile(path):
        return {"available": False, "reason": f"Faster R-CNN weights are not on this server ({path}).",
                "weights": None}
    return {"available": True, "reason": "torchvision Faster R-CNN weights found.", "weights": path}


class DetectorExtractor:
    """torchvision Faster R-CNN (ResNet-50 FPN, COCO): top ``max_regions`` boxes + 1024-d RoI features."""

    kind = "detector"

    def __init__(self, dim: int = 2048, max_regions: int = 36, device=None, **_):
        status = detector_status()
        if not status["available"]:
            raise RuntimeError("The object-detector feature extractor is unavailable: " + status["reason"])
        from torchvision.models.detection import fasterrcnn_resnet50_fpn

        self.dim, self.max_regions = int(dim), int(max_regions)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
        self.model.load_state_dict(torch.load(status["weights"], map_location="cpu"))
        self.model.to(self.device).eval()
        self.id = hashlib.sha256(f"detector:{DETECTOR_WEIGHTS}:{self.dim}:{self.max_regions}".encode()).hexdigest()[:20]

    def describe(self) -> dict:
        return {"kind": self.kind, "dim": self.dim, "max_regions": self.max_regions, "id": self.id,
                "name": "Faster R-CNN ResNet-50 FPN (COCO)", "weights": f"pretrained: torchvision {DETECTOR_WEIGHTS}"}

    def save(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, EXTRACTOR_FILE), "w", encoding="utf-8") as fh:
            json.dump(self.describe(), fh, indent=2)

    @torch.no_grad()
    def __call__(self, images: list[Image.Image]) -> list[dict]:
        import torchvision.transforms.functional as TF

        tensors = [TF.to_tensor(im.convert("RGB")).to(self.device) for im in images]
        m = self.model
        detections = m(tensors)
        images_t, _ = m.transform(tensors)
        fmaps = m.backbone(images_t.tensors)
        out = []
        for i, (im, det) in enumerate(zip(images, detections)):
            w, h = im.size
            boxes = det["boxes"][: self.max_regions]
            if boxes.shape[0] == 0:  # nothing detected: the whole image is the one region
                boxes = torch.tensor([[0.0, 0.0, float(w), float(h)]], device=self.device)
            sx = images_t.image_sizes[i][1] / w
            sy = images_t.image_sizes[i][0] / h
            scaled = boxes * torch.tensor([sx, sy, sx, sy], device=self.device)
            pooled = m.roi_heads.box_roi_pool({k: v[i:i + 1] for k, v in fmaps.items()}, [scaled],
                                              [images_t.image_sizes[i]])
            feats = m.roi_heads.box_head(pooled)
            out.append({"features": fit_dim(feats.float().cpu(), self.dim), "boxes": boxes.float().cpu(),
                        "size": (w, h)})
        return out


def make_extractor(kind: str = "grid", **kwargs):
    if kind == "detector":
        return DetectorExtractor(**kwargs)
    if kind == "grid":
        return GridExtractor(**{k: v for k, v in kwargs.items()
                                if k in ("backbone", "grid", "dim", "image_size", "seed", "device")})
    raise ValueError(f"Unknown feature extractor {kind!r} (choose 'grid' or 'detector')")


def load_extractor(folder: str, device=None):
    """Rebuild the extractor saved by ``extractor.save(folder)``."""
    with open(os.path.join(folder, EXTRACTOR_FILE), encoding="utf-8") as fh:
        info = json.load(fh)
    if info["kind"] == "detector":
        return DetectorExtractor(dim=info["dim"], max_regions=info["max_regions"], device=device)
    backbone = info.get("backbone") or None
    if backbone and not os.path.isabs(backbone) and os.path.isdir(os.path.join(folder, backbone)):
        backbone = os.path.join(folder, backbone)
    return GridExtractor(backbone=backbone, grid=info["grid"], dim=info["dim"], image_size=info["image_size"],
                         seed=info.get("seed", 0), device=device)


def extract_features(image_paths: list[str], extractor, cache_dir: str | None = None, batch_size: int = 32,
                     report: Callable | None = None) -> list[dict]:
    """Features for every path (same order), computed once per (image content, extractor) and cached."""
    cache = os.path.join(cache_dir or DEFAULT_CACHE, extractor.id)
    os.makedirs(cache, exist_ok=True)
    record = os.path.join(cache, EXTRACTOR_FILE)  # which extractor (name, weights) made these features
    if not os.path.isfile(record):
        tmp = f"{record}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(extractor.describe(), fh, indent=2)
        os.replace(tmp, record)
    results: list[dict | None] = [None] * len(image_paths)
    todo: list[tuple[int, str]] = []
    hits = 0
    for i, path in enumerate(image_paths):
        digest = file_sha256(path)
        cached = os.path.join(cache, digest + ".pt")
        if os.path.isfile(cached):
            try:
                results[i] = torch.load(cached, map_location="cpu")
                hits += 1
                continue
            except Exception:  # a torn write from a killed worker: recompute
                os.remove(cached)
        todo.append((i, cached))
    for start in range(0, len(todo), batch_size):
        part = todo[start:start + batch_size]
        images = []
        for i, _ in part:
            with Image.open(image_paths[i]) as im:
                images.append(im.convert("RGB"))
        for (i, cached), res in zip(part, extractor(images)):
            tmp = cached + f".{os.getpid()}.tmp"
            torch.save(res, tmp)
            os.replace(tmp, cached)
            results[i] = res
        if report:
            report(min(1.0, (start + len(part)) / max(1, len(todo))), "Extracting image features")
    extract_features.last_stats = {"hits": hits, "computed": len(todo)}
    return results


extract_features.last_stats = {"hits": 0, "computed": 0}
