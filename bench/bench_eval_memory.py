"""Peak RSS of a batch evaluation of a VQAv2-shaped dataset, the job run in a process of its own.

    .venv/bin/python bench/bench_eval_memory.py [--photos 1500] [--questions 60000] [--code DIR ...]

On a database and media folder of its own (see bench_load.py) it trains a small ``baseline-rnn`` on easy-VQA,
stores ``--photos`` 640x480 JPEGs as a ready dataset with ``--questions`` distinct questions (ten answers each,
inserted directly, no cleaning), then for each ``--code`` folder (default: this checkout; give an older
checkout's folder to compare) runs ``evaluation_app.jobs.batch_eval_job`` in a fresh Python started in that
folder and prints its peak RSS (``VmHWM`` of /proc/self/status: the process itself, what a worker's work horse
holds; not ``ru_maxrss``, which a spawned child inherits from its parent's resident size on Linux), the
job's time and the size of the downloads (``--no-overlays``: the ZIP then holds each question's photo).
``EVAL_CHUNK_QUESTIONS`` and ``PIGGYBACK_TORCH_THREADS`` pass through.

``--worker`` runs the evaluation as users do instead: ``create_dataset_evaluation`` enqueues it and a real
``manage.py rqworker default gpu`` of this checkout runs it in its work horse, while the peak of the worker's whole
process tree is sampled every 0.25 s (the sum of RSS, pages shared with the rqworker counted in each process, and
the sum of PSS; see bench_scale.PeakRSS).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    """This process's own resident high-water mark (VmHWM). ``ru_maxrss`` would not do: on Linux a spawned
    child's starts at its parent's resident size (exec keeps the larger of the two), so it read this
    benchmark's parent - which built the dataset - instead of the job."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(pk: int) -> int:
    """Run the evaluation's job here (the code of the current folder) and print one JSON line."""

    sys.path.insert(0, os.getcwd())
    import django

    django.setup()
    from django.core.files.storage import default_storage

    from evaluation_app.jobs import batch_eval_job
    from evaluation_app.models import Evaluation

    if os.environ.get("BENCH_SAMPLE"):   # print the job's RSS and stage every BENCH_SAMPLE seconds (stderr)
        import threading

        def sample(every=float(os.environ["BENCH_SAMPLE"])):
            from django.db import connections

            while True:
                time.sleep(every)
                with open("/proc/self/status") as fh:
                    rss = next(int(line.split()[1]) // 1024 for line in fh if line.startswith("VmRSS:"))
                row = Evaluation.objects.filter(pk=pk).values_list("stage", flat=True).first()
                connections.close_all()
                print(f"{time.perf_counter() - t:7.1f} s {rss:6,} MB {row}", file=sys.stderr, flush=True)

        threading.Thread(target=sample, daemon=True).start()
    t = time.perf_counter()
    batch_eval_job(pk)
    seconds = time.perf_counter() - t
    ev = Evaluation.objects.get(pk=pk)
    sizes = {name: default_storage.size(f"{ev.output_dir}/{name}") for name in ("predictions.csv", "annotated.zip")
             if ev.status == "succeeded"}
    print(json.dumps({"status": ev.status, "error": ev.error[:300], "seconds": round(seconds, 1),
                      "peak_mb": peak_rss_mb(),
                      "count": ev.predictions.count(), "vqa_accuracy": ev.metrics.get("vqa_accuracy"),
                      "ece": ev.ece, "sizes": sizes}))
    return 0


def through_worker(infra, env, project, run, ds) -> dict:
    """Enqueue the evaluation like the API does and let a real rqworker run it; the worker tree's peaks."""
    from bench_scale import PeakRSS
    from django.core.files.storage import default_storage

    from evaluation_app.services import create_dataset_evaluation

    work = Path(env["work"])
    worker = infra.start([infra.PY, "manage.py", "rqworker", "default", "gpu"], {**os.environ, **env["env"]},
                         work / "eval-worker.log")
    peaks = PeakRSS(worker.pid, worker.pid)
    peaks.start()
    try:
        t = time.perf_counter()
        ev = create_dataset_evaluation(run.created_by, project, run, ds)
        while True:
            ev.refresh_from_db()
            if ev.status in ("succeeded", "failed", "cancelled"):
                break
            if worker.poll() is not None:
                raise SystemExit(f"the worker stopped: {(work / 'eval-worker.log').read_text()[-2000:]}")
            time.sleep(1)
        seconds = time.perf_counter() - t
    finally:
        peaks.stop_event.set()
        peaks.join()
        worker.stop()
    sizes = {name: default_storage.size(f"{ev.output_dir}/{name}") for name in ("predictions.csv", "annotated.zip")
             if ev.status == "succeeded"}
    return {"status": ev.status, "error": ev.error[:300], "seconds": round(seconds, 1), "sizes": sizes,
            "worker_mb": peaks.worker_max / 2**20, "worker_pss_mb": peaks.worker_pss_max / 2**20,
            "count": ev.predictions.count(), "vqa_accuracy": ev.metrics.get("vqa_accuracy"), "ece": ev.ece}


def make_dataset(project, user, photos: int, questions: int):
    import numpy as np
    from PIL import Image

    from datasets_app.models import Dataset, DatasetItem
    from datasets_app.services import dataset_image_root, images_prefix

    ds = Dataset.objects.create(project=project, name="vqa-shaped", status="succeeded", created_by=user,
                                images_file="x.zip", questions_file="x.json", has_answers=True)
    root = dataset_image_root(ds)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"COCO_val2014_{i:012d}.jpg" for i in range(photos)]
    for name in names:
        field = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        Image.fromarray(field).resize((640, 480), Image.BICUBIC).save(root / name, quality=85)
    colours = ["red", "blue", "green", "yellow", "white", "black", "brown", "gray", "orange", "purple"]
    shapes = ["circle", "square", "triangle", "rectangle"]
    prefix = images_prefix(ds)

    def rows():
        for n in range(questions):
            img = names[n % photos]   # the questions of an image are spread over the file, as in any order
            answer = colours[n % len(colours)] if n % 3 else shapes[n % len(shapes)]
            yield DatasetItem(dataset=ds, row=n + 2, image=f"{prefix}/{img}", image_original_name=img,
                              question=f"What is the colour of thing {n} in this picture?" if n % 3 else
                              f"What shape is thing {n}?", answers=[answer] * 9 + [colours[0]],
                              answer_type="other", question_type="what color is the" if n % 3 else "what")

    DatasetItem.objects.bulk_create(rows(), batch_size=5000)
    return ds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=1500)
    ap.add_argument("--questions", type=int, default=60_000)
    ap.add_argument("--code", action="append", help="folder of the code to run the job with (repeatable)")
    ap.add_argument("--no-overlays", action="store_true",
                    help="evaluate as a model that cannot explain (no attention maps drawn: drawing a 640x480 "
                         "overlay per question runs at ~9 questions/s on 2 cores)")
    ap.add_argument("--worker", action="store_true",
                    help="run it through a real rqworker and report its process tree's peak (RSS and PSS sums)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child)

    sys.path.insert(0, str(ROOT / "bench"))
    os.environ.setdefault("LOAD_REDIS_URL", os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15"))
    import bench_load as infra

    signal.signal(signal.SIGTERM, infra._on_signal)
    env = infra.make_environment()
    data = infra.setup_data(env["work"], train_items=160, epochs=2)
    from evaluation_app.models import Evaluation
    from piggyback.models import Project
    from training_app.models import TrainingRun

    project = Project.objects.get(pk=data["project"])
    run = TrainingRun.objects.get(pk=data["run"])
    if args.no_overlays:
        type(run.model).objects.filter(pk=run.model_id).update(can_explain=False)
    t = time.perf_counter()
    ds = make_dataset(project, run.created_by, args.photos, args.questions)
    print(f"dataset: {args.photos:,} photos, {args.questions:,} questions in {time.perf_counter() - t:.0f} s",
          flush=True)
    results = []
    if args.worker:
        results.append(through_worker(infra, env, project, run, ds))
        print(json.dumps(results[-1]), flush=True)
    for code in ([] if args.worker else args.code or [str(ROOT)]):
        ev = Evaluation.objects.create(project=project, training_run=run, dataset=ds, status="queued",
                                       images_file="", questions_file="", created_by=run.created_by)
        proc = subprocess.run([infra.PY, str(Path(__file__).resolve()), "--child", str(ev.pk)], cwd=code,
                              env={**os.environ, **env["env"]}, capture_output=True, text=True)
        if os.environ.get("BENCH_SAMPLE"):
            print(proc.stderr[-6000:], flush=True)
        line = (proc.stdout.strip().splitlines() or ["{}"])[-1]
        try:
            result = json.loads(line)
        except json.JSONDecodeError:
            result = {"status": f"crashed ({proc.returncode})", "error": proc.stderr[-800:]}
        result["code"] = code
        print(json.dumps(result), flush=True)
        results.append(result)
    print(f"\n## Batch evaluation peak RSS ({os.cpu_count()} cores, load average "
          f"{'%.1f / %.1f / %.1f' % os.getloadavg()})\n")
    if args.worker:
        r = results[0]
        sizes = r.get("sizes") or {}
        files = " / ".join(f"{v / 2**20:,.0f} MiB" for v in sizes.values()) or "-"
        print("| run | photos / questions | status | job time | peak of the worker's tree: RSS sum (PSS sum) "
              "| predictions.csv / annotated.zip |")
        print("|---|---|---|---|---|---|")
        print(f"| rqworker + work horse | {args.photos:,} / {args.questions:,} | {r['status']} | {r['seconds']} s "
              f"| {r['worker_mb']:,.0f} MB ({r['worker_pss_mb']:,.0f} MB) | {files} |")
        return 0
    print("| code | photos / questions | status | job time | peak RSS of the job's process | predictions.csv / annotated.zip |")
    print("|---|---|---|---|---|---|")
    for r in results:
        sizes = r.get("sizes") or {}
        files = " / ".join(f"{v / 2**20:,.0f} MiB" for v in sizes.values()) or "-"
        print(f"| {r['code']} | {args.photos:,} / {args.questions:,} | {r['status']} | {r.get('seconds', '-')} s "
              f"| {r.get('peak_mb', 0):,.0f} MB | {files} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
