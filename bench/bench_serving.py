"""Serving benchmark: latency of one prediction through Django, throughput of a batch evaluation.

* Latency: ``POST /api/v1/training-runs/{id}/predict/`` through the Django test client (the whole stack:
  authentication, tenancy, image check + PNG store, cached model, top-5, regions, boxes overlay and
  heat-map drawn and stored, Prediction row), N times; median / p90 / p99, plus the first (cold) call.
* Throughput: ``batch_eval_job`` on the easy-VQA test split (1,000 images, 9,673 questions) uploaded as
  ZIP + CSV, run in-process: cleaning, prediction, an overlay per question, rows, CSV + ZIP downloads.

It runs on a throw-away test database (like the test suite) and a temporary media folder, and trains
the baseline with reduced parameters unless ``--model-dir`` gives a trained ``from_pretrained`` folder.

    .venv/bin/python bench/bench_serving.py [--requests 100] [--model-dir DIR] [--max-images N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import tests.envdefaults  # noqa: E402,F401  (PostgreSQL/Redis defaults, temporary media + cache folders)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "piggyback.settings")


def percentile(values, q):
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def train_baseline(out_dir: Path, max_items: int, epochs: int) -> tuple[Path, dict]:
    from gpu_worker.easyvqa import load_items
    from gpu_worker.train import train_model

    items, root = load_items("train")
    t0 = time.perf_counter()
    result = train_model("baseline-rnn", items, root, str(out_dir),
                         {"epochs": epochs, "max_train_items": max_items, "patience": 2})
    result["wall_seconds"] = time.perf_counter() - t0
    return out_dir / "model", result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--model-dir", help="a trained from_pretrained folder (skips training)")
    ap.add_argument("--train-items", type=int, default=8000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--max-images", type=int, default=None, help="limit the test split (default: all 1,000)")
    args = ap.parse_args()

    import django

    django.setup()
    from django.db import connection
    from django.test.utils import setup_test_environment

    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    # a database of its own, so it never collides with a test suite running beside it
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"test_{old_name}_bench_serving_{os.getpid()}"
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        run_bench(args)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def run_bench(args):
    import torch
    from django.contrib.auth import get_user_model
    from django.core.files import File
    from rest_framework.test import APIClient

    from datasets_app.models import Dataset
    from evaluation_app import model_cache
    from evaluation_app.jobs import batch_eval_job
    from evaluation_app.models import Evaluation
    from gpu_worker.sample_data import easy_vqa_files
    from piggyback.files import save_tree
    from piggyback.project_services import create_project
    from tests.evaluation_helpers import png_bytes
    from training_app.models import PretrainedModel, TrainingRun

    work = Path(tempfile.mkdtemp(prefix="pb-bench-serving-"))
    train_info = {}
    if args.model_dir:
        model_dir = Path(args.model_dir)
    else:
        print(f"Training baseline-rnn on {args.train_items:,} easy-VQA questions, {args.epochs} epochs…", flush=True)
        model_dir, train_info = train_baseline(work / "run", args.train_items, args.epochs)

    user = get_user_model().objects.create_user("bench", password="bench-pw-123")
    project = create_project(user, "Bench", "")
    model, _ = PretrainedModel.objects.get_or_create(
        key="baseline-rnn", defaults=dict(name="Baseline CNN + GRU", family="baseline", task="classify",
                                          registry_key="baseline-rnn", available=True))
    ds = Dataset.objects.create(project=project, name="easy", status="succeeded", images_file="x.zip",
                                questions_file="x.csv")
    run = TrainingRun.objects.create(project=project, dataset=ds, model=model, status="succeeded", name="bench")
    save_tree(model_dir, f"projects/{project.pk}/runs/{run.pk}/model")
    run._update(output_dir=f"projects/{project.pk}/runs/{run.pk}")

    # ---- latency of one prediction through Django
    client = APIClient()
    client.force_authenticate(user)
    image = png_bytes(size=(64, 64))
    from django.core.files.uploadedfile import SimpleUploadedFile

    def ask():
        t0 = time.perf_counter()
        r = client.post(f"/api/v1/training-runs/{run.pk}/predict/",
                        {"image": SimpleUploadedFile("s.png", image, "image/png"), "question": "What color is the shape?"},
                        format="multipart")
        assert r.status_code == 201, r.content
        return (time.perf_counter() - t0) * 1000, r.json()["latency_ms"]

    model_cache.clear()
    cold_ms, _ = ask()
    samples = [ask() for _ in range(args.requests)]
    total = [s[0] for s in samples]
    model_only = [s[1] for s in samples]

    # ---- throughput of a batch evaluation over the easy-VQA test split
    files = easy_vqa_files("test", work / "upload", max_images=args.max_images)
    ev = Evaluation(project=project, training_run=run, created_by=user, params={"top_k": 5, "batch_size": 256,
                    "images_name": "easy-vqa-test.zip", "questions_name": "easy-vqa-test.csv"})
    with open(files["zip"], "rb") as z, open(files["csv"], "rb") as c:
        ev.images_file.save("images.zip", File(z), save=False)
        ev.questions_file.save("questions.csv", File(c), save=False)
    ev.save()
    stages = []
    from piggyback import jobs as pb_jobs

    original_call = pb_jobs.Reporter.__call__

    def spy(self, progress, stage="", metrics=None, force=False):
        if stage and (not stages or stages[-1][1] != stage.split(":")[0]):
            stages.append((time.perf_counter(), stage.split(":")[0]))
        return original_call(self, progress, stage, metrics, force)

    pb_jobs.Reporter.__call__ = spy
    t0 = time.perf_counter()
    batch_eval_job(ev.pk)
    batch_s = time.perf_counter() - t0
    pb_jobs.Reporter.__call__ = original_call
    ev.refresh_from_db()
    assert ev.status == "succeeded", ev.error
    n = ev.predictions.count()

    # ---- report
    threads = torch.get_num_threads()
    print()
    print(f"## Serving benchmark ({os.cpu_count()} CPU cores, torch threads {threads}, no GPU)")
    print()
    if train_info:
        print(f"Model: baseline-rnn trained here on {train_info.get('num_train', 0):,} questions, "
              f"{train_info.get('epochs_run')} epochs in {train_info['wall_seconds']:.0f} s "
              f"(validation VQA accuracy {train_info.get('vqa_accuracy')} %).")
    else:
        print(f"Model: {args.model_dir}")
    print()
    print("| measurement | value |")
    print("|---|---|")
    print(f"| single prediction, first call (loads the model) | {cold_ms:.1f} ms |")
    print(f"| single prediction through Django, median of {len(total)} | {statistics.median(total):.1f} ms |")
    print(f"| single prediction through Django, p90 / p99 | {percentile(total, .9):.1f} / {percentile(total, .99):.1f} ms |")
    print(f"| of which model call (cached), median | {statistics.median(model_only):.1f} ms |")
    print(f"| batch evaluation, easy-VQA test ({n:,} questions, {ev.counts.get('images_kept', 0):,} images) | {batch_s:.1f} s |")
    print(f"| batch throughput, end to end | {n / batch_s:,.0f} questions/s |")
    print(f"| batch VQA accuracy (official) | {ev.metrics.get('vqa_accuracy')} % |")
    print()
    print("Batch stages (wall time):")
    print()
    print("| stage | seconds |")
    print("|---|---|")
    marks = stages + [(t0 + batch_s, "end")]
    merged: dict[str, float] = {}
    for (t_a, name), (t_b, _) in zip(marks, marks[1:]):
        key = ("Answering questions" if name.startswith("Answer") else
               "Checking the upload" if name.startswith(("Checking", "Reading", "Ready", "Starting")) else name)
        merged[key] = merged.get(key, 0.0) + (t_b - t_a)
    for name, secs in merged.items():
        print(f"| {name} | {secs:.1f} |")


if __name__ == "__main__":
    main()
