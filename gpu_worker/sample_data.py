"""Sample datasets built from the ``easy-vqa`` package (coloured shapes, 13 answers).

* :func:`build_sample_zip` - a small images ZIP + questions CSV (image, question, answer) that the
  upload page offers for download and the demo loader uses.
* :func:`easy_vqa_files` - a whole split as ZIP + CSV, for benchmarks and tests.
"""
from __future__ import annotations

import os
import random
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Optional

import easy_vqa

from gpu_worker.tabular import write_csv

__all__ = ["build_sample_zip", "easy_vqa_files", "load_split", "write_split"]


def load_split(split: str = "train"):
    """Return (questions, answers, image_ids, {image_id: png path}) for "train" or "test"."""
    if split == "train":
        qs, ans, ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    elif split == "test":
        qs, ans, ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    else:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    return qs, ans, ids, paths


def _write(zip_path, csv_path, split, chosen_ids, qs, ans, ids, paths) -> dict:
    chosen = set(chosen_ids)
    rows = [(f"{i}.png", q, a) for q, a, i in zip(qs, ans, ids) if i in chosen]
    Path(zip_path).parent.mkdir(parents=True, exist_ok=True)
    Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
    # PNG files are already compressed: store them (fast, and the ZIP stays small anyway)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as zf:
        for image_id in sorted(chosen):
            zf.write(paths[image_id], arcname=f"{image_id}.png")
    write_csv(csv_path, rows, ["image", "question", "answer"])
    return {"zip": str(zip_path), "csv": str(csv_path), "images": len(chosen), "questions": len(rows),
            "split": split}


def build_sample_zip(out_zip_path, csv_path=None, *, split: str = "train", max_images: int = 200,
                     seed: int = 0) -> dict:
    """Write a sample images ZIP (``max_images`` random easy-VQA images, reproducible by ``seed``) and
    its questions CSV (default: next to the ZIP, ``<zip stem>.csv``). Returns
    {"zip", "csv", "images", "questions", "split"}."""
    qs, ans, ids, paths = load_split(split)
    by_image = defaultdict(int)
    for i in ids:
        by_image[i] += 1
    candidates = sorted(i for i in paths if by_image[i])
    rng = random.Random(seed)
    chosen = rng.sample(candidates, min(max_images, len(candidates)))
    csv_path = csv_path or os.path.splitext(str(out_zip_path))[0] + ".csv"
    return _write(out_zip_path, csv_path, split, chosen, qs, ans, ids, paths)


def write_split(split: str, zip_path, csv_path, max_images: Optional[int] = None) -> dict:
    """Write a whole split (or its first ``max_images`` image ids) as ``zip_path`` + ``csv_path``.
    Returns the same dict as :func:`build_sample_zip`."""
    qs, ans, ids, paths = load_split(split)
    chosen = sorted(paths)
    if max_images is not None:
        chosen = chosen[:max_images]
    return _write(zip_path, csv_path, split, chosen, qs, ans, ids, paths)


def easy_vqa_files(split: str, out_dir, max_images: Optional[int] = None) -> dict:
    """Write ``out_dir/easy-vqa-<split>.zip`` and ``.csv`` for the whole split (or its first
    ``max_images`` image ids). Returns the same dict as :func:`build_sample_zip`."""
    out_dir = Path(out_dir)
    return write_split(split, out_dir / f"easy-vqa-{split}.zip", out_dir / f"easy-vqa-{split}.csv", max_images)
