"""Explanations: draw attention regions on the image, and score them with the pointing game.

* :func:`draw_overlay` - the top-5 regions as boxes (darker and thicker = stronger), or a heatmap
  blended over the image (``heatmap=True``), saved as PNG.
* :func:`pointing_game` - does the strongest region hit the object? For easy-VQA the object's box is
  computed from the pixels (background = corner colour, see :func:`gpu_worker.easyvqa.shape_box`).
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from gpu_worker.easyvqa import shape_box

__all__ = ["draw_overlay", "region_heatmap", "describe_regions", "pointing_game", "pointing_game_score", "shape_box"]

MIN_OVERLAY_SIDE = 256


def _open(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    with Image.open(image) as im:   # stored images are already upright (gpu_worker.images)
        return im.convert("RGB")


def region_heatmap(regions: Sequence[dict], width: int, height: int) -> np.ndarray:
    """(height, width) float map: each region's score spread over its box (overlaps add up), max = 1."""
    heat = np.zeros((height, width), dtype=np.float32)
    for r in regions:
        x0, y0, x1, y1 = (int(round(v)) for v in r["box"])
        x0, y0 = max(0, x0), max(0, y0)
        x1, y1 = min(width, x1), min(height, y1)
        if x1 > x0 and y1 > y0:
            heat[y0:y1, x0:x1] += float(r["score"])
    m = heat.max()
    return heat / m if m > 0 else heat


def _place(centre: float, size: float, low: str, high: str) -> str:
    third = centre / size if size > 0 else 0.5
    return low if third < 1 / 3 else high if third > 2 / 3 else "centre"


def describe_regions(regions: Sequence[dict], width: int, height: int, top: int = 5) -> list[str]:
    """Words for the regions an overlay or heat-map shows, strongest first: ``["1. centre left, 38 %", ...]``.

    The place is the third of the image (top / centre / bottom, left / centre / right) holding the box's
    centre; the share is the region's attention score in per cent (scores that do not sum to at most 1
    are normalised by their sum first).
    """
    ranked = sorted(regions, key=lambda r: -float(r["score"]))[:top]
    total = sum(max(0.0, float(r["score"])) for r in regions)
    scale = 1.0 if total <= 1.0 + 1e-6 else 1.0 / total
    out = []
    for i, r in enumerate(ranked, start=1):
        x0, y0, x1, y1 = (float(v) for v in r["box"])
        vertical = _place((y0 + y1) / 2, height, "top", "bottom")
        horizontal = _place((x0 + x1) / 2, width, "left", "right")
        place = "centre" if vertical == horizontal == "centre" else f"{vertical} {horizontal}".replace(
            "centre centre", "centre")
        out.append(f"{i}. {place}, {round(100 * max(0.0, float(r['score'])) * scale)} %")
    return out


def _colormap(v: np.ndarray) -> np.ndarray:
    """Blue -> cyan -> yellow -> red colour map for values in 0..1 (no matplotlib needed)."""
    stops = np.array([[0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0]], dtype=np.float32)
    pos = np.clip(v, 0, 1) * (len(stops) - 1)
    i = np.minimum(pos.astype(int), len(stops) - 2)
    f = (pos - i)[..., None]
    return stops[i] * (1 - f) + stops[i + 1] * f


def draw_overlay(image_path_or_PIL, regions: Sequence[dict], out_path: str, *, heatmap: bool = False,
                 top: int = 5, alpha: float = 0.45) -> str:
    """Save a PNG of the image with its regions; returns ``out_path``.

    Boxes: the ``top`` strongest regions, the strongest darkest and thickest, numbered 1..top.
    Heatmap: region scores blended over the image with a blue->red colour map. Small images are
    scaled up (nearest neighbour) to at least 256 px so the marks stay readable.
    """
    img = _open(image_path_or_PIL)
    w, h = img.size
    ordered = sorted(regions or [], key=lambda r: -float(r["score"]))
    scale = max(1, int(np.ceil(MIN_OVERLAY_SIDE / max(1, min(w, h)))))
    if heatmap:
        heat = region_heatmap(ordered, w, h)
        base = np.asarray(img, dtype=np.float32)
        a = alpha * heat[..., None]
        out = Image.fromarray((base * (1 - a) + _colormap(heat) * a).clip(0, 255).astype(np.uint8))
        if scale > 1:
            out = out.resize((w * scale, h * scale), Image.NEAREST)
    else:
        out = img.resize((w * scale, h * scale), Image.NEAREST) if scale > 1 else img.copy()
        draw = ImageDraw.Draw(out)
        shown = ordered[:top]
        if shown:
            s_max = max(float(shown[0]["score"]), 1e-12)
            for rank in range(len(shown) - 1, -1, -1):  # strongest drawn last (on top)
                r = shown[rank]
                strength = float(r["score"]) / s_max
                shade = int(round(230 * (1 - strength)))            # 0 = black for the strongest
                width = max(1, int(round((1 + 4 * strength) * max(1, min(w, h) * scale / 256))))
                x0, y0, x1, y1 = (float(v) * scale for v in r["box"])
                draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(shade, shade, shade), width=width)
                draw.text((x0 + width + 1, y0 + width), str(rank + 1), fill=(255, 255, 255),
                          stroke_width=2, stroke_fill=(shade, shade, shade))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    out.save(out_path, format="PNG")
    return out_path


def _hit(box: Sequence[float], target: Sequence[float], tolerance: float) -> bool:
    """The centre of ``box`` lies inside ``target`` grown by ``tolerance`` pixels."""
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    return (target[0] - tolerance <= cx <= target[2] + tolerance and
            target[1] - tolerance <= cy <= target[3] + tolerance)


def pointing_game(regions: Sequence[dict], shape_box_or_image, *, tolerance: float = 0.0) -> bool | None:
    """Pointing game for one prediction: True when the centre of the strongest region lies inside the
    object's box. The second argument is the box [x0, y0, x1, y1] or an easy-VQA image (path/PIL), whose
    shape box is computed from the pixels. None when there are no regions or no object."""
    if not regions:
        return None
    target = shape_box_or_image
    if not (isinstance(target, (list, tuple)) and len(target) == 4):
        target = shape_box(target)
    if target is None:
        return None
    best = max(regions, key=lambda r: float(r["score"]))
    return _hit(best["box"], target, tolerance)


def pointing_game_score(predictions: Iterable[dict], items: Sequence[dict], image_root: str, *,
                        tolerance: float = 0.0) -> dict:
    """Pointing-game hit rate (%) over predictions with regions, computing each easy-VQA shape box once
    per image. Returns {"pointing_game": %, "count": n, "attention_mass_on_object": mean % of score}."""
    boxes: dict[str, list | None] = {}
    hits = n = 0
    mass = 0.0
    for pred, item in zip(predictions, items):
        regs = pred.get("regions") or []
        if not regs:
            continue
        name = item["image"]
        if name not in boxes:
            boxes[name] = shape_box(os.path.join(image_root, name))
        target = boxes[name]
        if target is None:
            continue
        n += 1
        hits += bool(pointing_game(regs, target, tolerance=tolerance))
        total = sum(float(r["score"]) for r in regs) or 1.0
        mass += sum(float(r["score"]) for r in regs if _hit(r["box"], target, tolerance)) / total
    return {"pointing_game": round(100.0 * hits / n, 2) if n else None, "count": n,
            "attention_mass_on_object": round(100.0 * mass / n, 2) if n else None}
