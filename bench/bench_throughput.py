"""Training throughput: PiggyBack's loop (``train_model``) vs Hugging Face ``Trainer``, same model and data.

    .venv/bin/python bench/bench_throughput.py [--model baseline-rnn] [--images 600] [--repeats 2]

Both start from the same initial weights (same seed), use the same pre-decoded tensors, batch size,
learning rate, warm-up and one epoch. The Trainer gets the usual per-question dataset (one image copy
and one question per sample, default collator); our loop groups questions by image (the CNN runs once
per image, each distinct question text is encoded once per batch). samples/s = training questions per
second of the training loop; the best of ``--repeats`` runs is kept (the machine is shared).
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench._results import RESULTS, machine_line, write_section  # noqa: E402
from gpu_worker.easyvqa import load_items  # noqa: E402
from gpu_worker.models.registry import get_adapter_class, get_spec, resolve_params  # noqa: E402
from gpu_worker.train import set_torch_threads, train_model  # noqa: E402


class QuestionDataset(torch.utils.data.Dataset):
    """One sample per question, as a Trainer user would write it (image tensor per sample)."""

    def __init__(self, enc, num_labels):
        self.enc, self.num_labels = enc, num_labels

    def __len__(self):
        return self.enc["n"]

    def __getitem__(self, i):
        e = self.enc
        q = int(e["q_of_item"][i])
        ids = e["input_ids"][q]
        labels = torch.zeros(self.num_labels + 1)
        lid = e["label_ids"][i]
        labels.scatter_(0, torch.where(lid < 0, self.num_labels, lid), e["label_scores"][i])
        return {"pixel_values": e["images"][int(e["img_idx"][i])], "input_ids": ids,
                "attention_mask": (ids != 0).long(), "labels": labels[:-1]}


def run_ours(model_key, items, root, params):
    out = tempfile.mkdtemp(prefix="bench_ours_")
    r = train_model(model_key, items, root, out, dict(params, epochs=1, val_fraction=0.0, patience=0))
    return r["num_train"] / r["train_seconds"], r["history"][-1]["loss"]


def run_trainer(model_key, items, root, params):
    from transformers import Trainer, TrainingArguments

    spec = get_spec(model_key)
    adapter = get_adapter_class(model_key).create(spec, items, root, params, device="cpu")
    enc = adapter.encode(items, root)          # same one-time pre-processing as ours
    ds = QuestionDataset(enc, adapter.model.config.num_labels)
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="bench_trainer_"), per_device_train_batch_size=params["batch_size"],
        num_train_epochs=1, learning_rate=params["learning_rate"], weight_decay=params["weight_decay"],
        warmup_steps=int(round(params["warmup_ratio"] * math.ceil(len(ds) / params["batch_size"]))),
        lr_scheduler_type="linear", max_grad_norm=5.0,
        logging_strategy="no", save_strategy="no", report_to="none", use_cpu=True, seed=params["seed"],
        dataloader_num_workers=0, disable_tqdm=True)
    trainer = Trainer(model=adapter.model, args=args, train_dataset=ds)
    t0 = time.perf_counter()
    out = trainer.train()
    dt = time.perf_counter() - t0
    return len(ds) / dt, out.training_loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="baseline-rnn")
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    threads = set_torch_threads()
    items, root = load_items("train", max_images=args.images)
    params = resolve_params(args.model, {})
    ours, hf = [], []
    for _ in range(args.repeats):   # interleaved, so both see similar machine load
        ours.append(run_ours(args.model, items, root, params))
        hf.append(run_trainer(args.model, items, root, params))
    o, h = max(ours), max(hf)
    md = "\n".join([
        f"## Training throughput: our loop vs HF Trainer (`{args.model}`)", "",
        machine_line(), "",
        f"{len(items):,} easy-VQA questions ({args.images} images), 1 epoch, batch {params['batch_size']}, "
        f"lr {params['learning_rate']}, {threads} torch threads, best of {args.repeats} interleaved runs.", "",
        "| loop | samples/s | loss after 1 epoch |", "|---|---:|---:|",
        f"| PiggyBack `train_model` (grouped by image) | {o[0]:,.0f} | {o[1]:.3f} |",
        f"| HF `Trainer` (one sample per question) | {h[0]:,.0f} | {h[1]:.3f} |",
        f"| **ratio** | **{o[0] / h[0]:.1f}x** | |", "",
        "All runs (samples/s): ours " + ", ".join(f"{x[0]:,.0f}" for x in ours)
        + "; Trainer " + ", ".join(f"{x[0]:,.0f}" for x in hf) + ".",
    ])
    print(md)
    write_section("throughput", md, RESULTS)


if __name__ == "__main__":
    main()
