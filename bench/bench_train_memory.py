"""Peak RSS of a baseline training on a VQAv2-sized item list, without a database or a web server.

    .venv/bin/python bench/bench_train_memory.py [--photos 11000] [--questions 440000] [--steps 20]

Writes ``--photos`` 640x480 JPEGs to a temporary folder, builds ``--questions`` item dicts the way
``datasets_app.services.training_items(..., slim=True)`` does for the training job (every question distinct,
ten answers in a shared tuple, repeated strings shared, each a ``SlimItem``; ``--full-items``: the web side's 9-key dicts), runs ``gpu_worker.train.train_model("baseline-rnn", ...)`` for one epoch and cancels it after
``--steps`` batches (preparing the data, encoding the validation split and the first image window have
happened by then), and prints the process's peak RSS. ``PIGGYBACK_IMAGE_CHUNK`` sets the window
(try 100000 for "all images at once"); run with ``PIGGYBACK_TORCH_THREADS=1`` on a shared machine.
"""
from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=11_000)
    ap.add_argument("--questions", type=int, default=440_000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--full-items", action="store_true",
                    help="the 9-key item dicts of the web side instead of the training job's slim ones")
    args = ap.parse_args(argv)

    import numpy as np
    from PIL import Image

    from gpu_worker import Cancelled
    from gpu_worker.items import SlimItem
    from gpu_worker.memory import tune_malloc
    from gpu_worker.train import image_chunk, train_model

    tuned = tune_malloc()   # as every job of the workers does (PIGGYBACK_MALLOC_*=0: glibc's defaults)
    work = Path(tempfile.mkdtemp(prefix="pb-train-mem-"))
    try:
        root = work / "images"
        root.mkdir()
        rng = np.random.default_rng(0)
        t = time.perf_counter()
        for i in range(args.photos):
            field = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
            Image.fromarray(field).resize((640, 480), Image.BICUBIC).save(root / f"{i:08x}a1b2c3d4.jpg", quality=85)
        build_s = time.perf_counter() - t
        answers = ["yes", "no", "2", "red", "blue", "dog", "cat", "1", "white", "black"]
        shared: dict = {}

        def one(value):
            return shared.setdefault(value, value)

        items = []
        for n in range(args.questions):
            img = n % args.photos
            if args.full_items:   # what training_items() returns for the web side (9 keys, answer lists)
                items.append({"id": n + 1, "image": one(f"{img:08x}a1b2c3d4.jpg"),
                              "question": f"What color is the thing number {n % 5000} (view {n // 5000})?",
                              "answers": [one(answers[(n + k // 3) % 10]) for k in range(10)],
                              "answer_type": one("other"), "question_type": one("what color is the"),
                              "row": n + 2, "stored": one(f"projects/1/datasets/1/images/{img:08x}a1b2c3d4.jpg"),
                              "image_original_name": one(f"train2014/COCO_train2014_{img:012d}.jpg")})
                continue
            # what the training job gets: training_items(..., slim=True)
            items.append(SlimItem(one(f"{img:08x}a1b2c3d4.jpg"),
                                  f"What color is the thing number {n % 5000} (view {n // 5000})?",
                                  one(tuple(one(answers[(n + k // 3) % 10]) for k in range(10))),
                                  one("other"), one("what color is the")))
        items_mb = peak_mb()
        polls = {"n": 0}

        def cancel():
            polls["n"] += 1
            return polls["n"] > args.steps

        t = time.perf_counter()
        try:
            train_model("baseline-rnn", items, str(root), str(work / "run"), {"epochs": 1}, should_cancel=cancel,
                        device="cpu")
        except Cancelled:
            pass
        print(f"photos {args.photos:,} (written in {build_s:.0f} s), questions {args.questions:,}, "
              f"PIGGYBACK_IMAGE_CHUNK {image_chunk()}, malloc {tuned}: peak RSS {items_mb:,.0f} MB with the items built, "
              f"{peak_mb():,.0f} MB after {args.steps} training steps ({time.perf_counter() - t:.0f} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
