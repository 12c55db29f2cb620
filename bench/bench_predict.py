"""Prediction speed: ``predict_batch`` (batched, grouped by image) vs one question at a time.

    .venv/bin/python bench/bench_predict.py [--model-dir out/model] [--questions 2000] [--single 300]

One-by-one is measured two ways: our API called per question, and plain transformers
(``PiggyBaselineForVQA.from_pretrained`` + PIL/tokenizer pre-processing + one forward per question).
``transformers.pipeline`` does not accept this custom model (the visual-question-answering task
is gone from transformers 5), so it is not in the table. Without --model-dir a freshly initialised
default model is used (speed does not depend on the weights).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench._results import RESULTS, machine_line, write_section  # noqa: E402
from gpu_worker.easyvqa import load_items  # noqa: E402
from gpu_worker.models.registry import DEFAULT_MODEL_KEY, get_adapter_class, get_spec  # noqa: E402
from gpu_worker.predict import load_model, predict_batch  # noqa: E402
from gpu_worker.train import set_torch_threads  # noqa: E402


def plain_transformers_one_by_one(folder, items, root):
    from PIL import Image
    from transformers import AutoTokenizer

    from gpu_worker.models.baseline import PiggyBaselineForVQA

    model = PiggyBaselineForVQA.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    size = model.config.image_size
    answers = []
    with torch.no_grad():
        for it in items:
            img = Image.open(os.path.join(root, it["image"])).convert("RGB").resize((size, size), Image.BILINEAR)
            px = torch.from_numpy(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()).unsqueeze(0)
            enc = tok(it["question"], return_tensors="pt")
            logits = model(pixel_values=px, input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
            answers.append(model.config.id2label[int(logits.argmax(-1))])
    return answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--questions", type=int, default=2000)
    ap.add_argument("--single", type=int, default=300)
    args = ap.parse_args()
    threads = set_torch_threads()
    items, root = load_items("test", max_items=args.questions)
    folder = args.model_dir
    if folder is None:
        train, troot = load_items("train", max_images=200)
        spec = get_spec(DEFAULT_MODEL_KEY)
        folder = tempfile.mkdtemp(prefix="bench_predict_")
        get_adapter_class(spec.key).create(spec, train, troot, {}).save(folder)
    adapter = load_model(folder)
    predict_batch(adapter, items[:64], root)                              # warm-up

    rows = []
    for explain in (False, True):
        best = 0.0
        for _ in range(2):   # best of 2: the first pass also pays for reading the images from disk
            t0 = time.perf_counter()
            batched = predict_batch(adapter, items, root, top_k=5, batch_size=256, explain=explain)
            best = max(best, len(items) / (time.perf_counter() - t0))
        rows.append((f"`predict_batch`, batch 256{', + regions' if explain else ''}", best))
    single = items[: args.single]
    t0 = time.perf_counter()
    ones = [predict_batch(adapter, [it], root, top_k=5, explain=True)[0] for it in single]
    one_rate = len(single) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    plain = plain_transformers_one_by_one(folder, single, root)
    plain_rate = len(single) / (time.perf_counter() - t0)
    same = np.mean([a["answer"] == b["answer"] for a, b in zip(ones, batched)]) * 100
    same_plain = np.mean([a == b["answer"] for a, b in zip(plain, batched)]) * 100
    batch_rate = rows[1][1]
    md = "\n".join([
        "## Prediction: batched vs one question at a time", "", machine_line(), "",
        f"Model `{DEFAULT_MODEL_KEY}`, {len(items):,} easy-VQA test questions batched, {len(single)} one by one; "
        f"{threads} torch threads.", "",
        "| method | questions/s |", "|---|---:|"]
        + [f"| {name} | {rate:,.0f} |" for name, rate in rows]
        + [f"| `predict_batch` one question per call, + regions | {one_rate:,.0f} |",
           f"| plain transformers `from_pretrained` model, one question per forward | {plain_rate:,.0f} |",
           f"| **ratio batched (+regions) / one-by-one (+regions)** | **{batch_rate / one_rate:.0f}x** |",
           f"| ratio batched (+regions) / plain transformers one-by-one | {batch_rate / plain_rate:.0f}x |", "",
           f"Same answer as the batched run: {same:.1f} % (our API one-by-one), {same_plain:.1f} % (plain "
           "transformers)."])
    print(md)
    write_section("predict", md, RESULTS)


if __name__ == "__main__":
    main()
