"""The easy-VQA data set (the ``easy-vqa`` package) as PiggyBack item dicts.

Used by the benchmarks, the unit tests and the sample data set. easy-VQA has one answer per question;
items carry it ten times (the item contract wants the annotators' answers), so official VQA accuracy
equals exact match on this data set.
"""
from __future__ import annotations

import csv
import os
import random
import shutil

from gpu_worker.vqa_normalize import answer_type, normalize_answer, question_type

SPLITS = ("train", "test")


def _package():
    try:
        import easy_vqa
    except ImportError as exc:  # pragma: no cover - the package is a requirement
        raise RuntimeError("The easy-vqa package is not installed (pip install easy-vqa)") from exc
    return easy_vqa


def image_root(split: str = "train") -> str:
    """Folder holding the split's PNG images (``<image_id>.png``) inside the installed package."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    pkg = _package()
    return os.path.join(os.path.dirname(pkg.__file__), "data", split, "images")


def answers() -> list[str]:
    """The 13 possible answers."""
    return list(_package().get_answers())


def load_items(split: str = "train", *, max_images: int | None = None, max_items: int | None = None,
               seed: int = 0) -> tuple[list[dict], str]:
    """Return ``(items, image_root)`` for a split.

    ``max_images`` keeps all questions of a random (seeded) subset of images; ``max_items`` then
    truncates the list (items stay grouped by image, in the package's order).
    """
    pkg = _package()
    texts, ans, image_ids = pkg.get_train_questions() if split == "train" else pkg.get_test_questions()
    root = image_root(split)
    keep = None
    if max_images is not None:
        uniq = sorted(set(image_ids))
        rng = random.Random(seed)
        keep = set(rng.sample(uniq, min(max_images, len(uniq))))
    items = []
    for i, (q, a, img) in enumerate(zip(texts, ans, image_ids)):
        if keep is not None and img not in keep:
            continue
        a = normalize_answer(a)
        items.append({
            "id": f"{split}-{i}",
            "image": f"{img}.png",
            "question": q,
            "answers": [a] * 10,
            "answer_type": answer_type([a]),
            "question_type": question_type(q),
        })
        if max_items is not None and len(items) >= max_items:
            break
    return items, root


def export_sample(out_dir: str, split: str = "train", *, max_images: int = 50, seed: int = 0,
                  csv_name: str = "questions.csv") -> tuple[list[dict], str]:
    """Copy a small easy-VQA subset to ``out_dir/images`` and write ``out_dir/<csv_name>``.

    The CSV has the columns ``image,question,answer``. Returns ``(items, out_dir/images)``.
    """
    items, root = load_items(split, max_images=max_images, seed=seed)
    img_dir = os.path.join(out_dir, "images")
    os.makedirs(img_dir, exist_ok=True)
    for name in sorted({it["image"] for it in items}):
        shutil.copyfile(os.path.join(root, name), os.path.join(img_dir, name))
    with open(os.path.join(out_dir, csv_name), "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "question", "answer"])
        for it in items:
            w.writerow([it["image"], it["question"], it["answers"][0]])
    return items, img_dir


def shape_box(image, background_tolerance: int = 8) -> list[int] | None:
    """Bounding box [x0, y0, x1, y1] (pixels, x1/y1 exclusive) of the non-background pixels.

    easy-VQA images are one shape on a plain background, so the top-left corner pixel is the
    background colour; every pixel that differs from it by more than ``background_tolerance`` (max
    over RGB channels, to ignore anti-aliasing noise) belongs to the shape. ``image`` is a path or a
    PIL image. Returns None when the image is blank.
    """
    import numpy as np
    from PIL import Image

    img = image if isinstance(image, Image.Image) else Image.open(image)
    arr = np.asarray(img.convert("RGB"), dtype=np.int16)
    bg = arr[0, 0]
    diff = np.abs(arr - bg).max(axis=2) > background_tolerance
    ys, xs = np.nonzero(diff)
    if len(xs) == 0:
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
