"""Train the platform's DEFAULT model with its DEFAULT parameters on the full easy-VQA train split, then
report official VQA accuracy on the test split, training wall time and the pointing-game score.

    .venv/bin/python bench/bench_easyvqa.py [--model baseline-rnn] [--params '{"epochs": 3}']
                                            [--max-images N] [--out bench/RESULTS.md]

Target: >= 99.8 % test VQA accuracy within 5 minutes of training on 2 CPU cores. On a shared machine
the wall time depends on the other load, so the process CPU time is reported as well.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._results import RESULTS, machine_line, write_section  # noqa: E402
from gpu_worker.easyvqa import load_items  # noqa: E402
from gpu_worker.explain import pointing_game_score  # noqa: E402
from gpu_worker.metrics import evaluate  # noqa: E402
from gpu_worker.models.registry import DEFAULT_MODEL_KEY, resolve_params  # noqa: E402
from gpu_worker.predict import load_model, predict_batch  # noqa: E402
from gpu_worker.train import train_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL_KEY)
    ap.add_argument("--params", default="{}", help="JSON overrides of the default parameters")
    ap.add_argument("--max-images", type=int, default=None, help="train on a subset (quick check)")
    ap.add_argument("--out", default=None, help="results file (default bench/RESULTS.md)")
    ap.add_argument("--section", default="easyvqa", help="section name in the results file (keeps other runs)")
    args = ap.parse_args()
    overrides = json.loads(args.params)

    train_items, train_root = load_items("train", max_images=args.max_images)
    test_items, test_root = load_items("test")
    out_dir = tempfile.mkdtemp(prefix="bench_easyvqa_")
    load_before = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    result = train_model(args.model, train_items, train_root, out_dir, overrides,
                         report=lambda p, s, m=None: print(f"{p:6.1%} {s} {m or ''}", flush=True)
                         if "done" in s else None)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    load_after = os.getloadavg()

    adapter = load_model(os.path.join(out_dir, "model"))
    t1 = time.perf_counter()
    preds = predict_batch(adapter, test_items, test_root, top_k=5, batch_size=256, explain=True)
    pred_s = time.perf_counter() - t1
    m = evaluate([p["answer"] for p in preds], test_items)
    pg = pointing_game_score(preds, test_items, test_root)

    params = resolve_params(args.model, overrides)
    rows = [
        ("model", f"`{args.model}`" + (" (default)" if args.model == DEFAULT_MODEL_KEY else "")),
        ("parameters", ", ".join(f"{k}={v}" for k, v in sorted(params.items()))),
        ("train / validation questions", f"{result['num_train']:,} / {result['num_val']:,} "
                                          f"({result['num_train_images']:,} / {result['num_val_images']:,} images)"),
        ("epochs run (best)", f"{result['epochs_run']} ({result['best_epoch']})"
                              + (", early stop" if result["stopped_early"] else "")),
        ("**test official VQA accuracy**", f"**{m['vqa_accuracy']:.2f} %** ({m['count']:,} questions)"),
        ("test accuracy per answer type", ", ".join(f"{k} {v:.2f} %" for k, v in m["per_answer_type"].items())),
        ("validation VQA accuracy (best epoch)", f"{result['vqa_accuracy']:.2f} %"),
        ("**training time (train_model wall)**", f"**{wall:.0f} s** (loop {result['train_seconds']:.0f} s, "
                                                  f"data prep {result['prepare_seconds']:.1f} s)"),
        ("process CPU time", f"{cpu:.0f} s ({result['threads']} torch threads)"),
        ("machine load average before / after", f"{load_before[0]:.1f} / {load_after[0]:.1f}"),
        ("test prediction (top-5 + regions)", f"{len(test_items) / pred_s:,.0f} questions/s"),
        ("**pointing game** (top region inside the shape)", f"**{pg['pointing_game']:.2f} %**"),
        ("attention mass on the shape's cells (share of the 16 strongest cells' score)", f"{pg['attention_mass_on_object']:.2f} %"),
    ]
    md = [f"## easy-VQA: default model, default parameters ({result['threads']} torch thread(s))", "", machine_line(), "",
          "| measure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    md += ["", "Per-epoch history: " + "; ".join(
        f"{h['epoch']}: loss {h['loss']:.3f}, val {h['val_vqa_accuracy']} % ({h['seconds']:.0f} s)"
        for h in result["history"])]
    text = "\n".join(md)
    print(text)
    write_section(args.section, text, Path(args.out) if args.out else RESULTS)


if __name__ == "__main__":
    main()
