"""Photos upright, once, when they enter the platform.

Phone cameras store the sensor's pixels and an EXIF ``Orientation`` tag (1-8) that tells viewers how to
turn them. PiggyBack applies that tag exactly once, when an image is accepted (dataset cleaning via
:mod:`gpu_worker.safezip`, a single question's upload, a batch evaluation's ZIP), and stores the upright
pixels without the tag. From then on every consumer - each model family, the stored image shown in the
pages, the overlays, the heat-map and the region boxes in the API - reads the same upright pixels, and
no model family turns images itself.
"""
from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageOps

__all__ = ["ORIENTATION_TAG", "exif_orientation", "upright", "upright_in_place"]

ORIENTATION_TAG = 0x0112


def exif_orientation(image: Image.Image) -> int:
    """The image's EXIF orientation (1 = already upright; 1 also when absent or invalid)."""
    try:
        value = int(image.getexif().get(ORIENTATION_TAG, 1) or 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block must not make an image unusable
        return 1
    return value if 1 <= value <= 8 else 1


def upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation says (a new image without the tag), or ``image`` itself."""
    if exif_orientation(image) == 1:
        return image
    return ImageOps.exif_transpose(image)


def upright_in_place(path, fmt: str | None = None) -> tuple[int, int]:
    """Rewrite the image file at ``path`` upright when its EXIF orientation is not 1; returns the upright
    (width, height).

    JPEGs are re-encoded with the source's own quantisation tables and chroma subsampling (the quality the
    camera chose), keeping the other EXIF fields and the ICC profile; other formats keep their format
    (PNG and lossless WebP stay lossless). The file is replaced atomically."""
    path = Path(path)
    with Image.open(path) as im:
        orientation = exif_orientation(im)
        if orientation == 1:
            return im.size
        fmt = (fmt or im.format or "PNG").upper()
        turned = ImageOps.exif_transpose(im)
        options = _save_options(im, turned, fmt)
        tmp = path.with_name(f".{path.name}.upright")
        try:
            turned.save(tmp, format=fmt, **options)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return turned.size


def _save_options(src: Image.Image, turned: Image.Image, fmt: str) -> dict:
    options: dict = {}
    exif = turned.getexif()   # exif_transpose has already removed the orientation tag
    if exif:
        options["exif"] = exif.tobytes()
    if src.info.get("icc_profile"):
        options["icc_profile"] = src.info["icc_profile"]
    if fmt == "JPEG":
        from PIL import JpegImagePlugin

        if getattr(src, "quantization", None):
            options["qtables"] = src.quantization
            sampling = JpegImagePlugin.get_sampling(src)
            if sampling >= 0:
                options["subsampling"] = sampling
        else:
            options["quality"] = 95
    elif fmt == "WEBP":
        options["lossless"] = True
    elif fmt == "GIF":
        options.pop("exif", None)
    return options
