"""Benchmark clean_dataset: one process against the process pool, on the same upload.

    .venv/bin/python bench/bench_cleaning.py [--data photos|easyvqa] [--photos 1500] [--workers N] [--repeat 3]
                                             [--rows all|job|one]

``photos`` (default) builds a ZIP of 640x480 photo-like JPEGs (smooth colour fields plus sensor-like
noise, about 60-90 KB each, all different) and a CSV with two questions per photo; ``easyvqa`` uses the
easy-VQA train split (4,000 tiny PNGs, 38,575 questions). The upload is built once; each row of the table
cleans it into a fresh folder with the same settings (thumbnails on or off as the row says), best of
``--repeat`` runs. Photos/s is images checked per second of the whole clean_dataset call.

The dataset cleaning job (``datasets_app.jobs.clean_dataset_job``) always makes thumbnails and checks images
in a pool of ``CLEANING_WORKERS`` processes, or one per core this process may run on when that setting is 0
(the default); ``--workers`` defaults to the same number, so the row marked "the cleaning job" is what the
platform runs. ``--rows job`` runs only that row; ``--rows one`` only 1 process with thumbnails, whose CPU
column is the whole cost of a photo (robust on a shared machine: divide 1000 by it, times the cores, for
the rate an idle worker reaches).
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_worker.cleaning import clean_dataset  # noqa: E402
from gpu_worker.sample_data import easy_vqa_files  # noqa: E402


def photo_jpeg(seed: int, width: int = 640, height: int = 480, quality: int = 85) -> bytes:
    """A photo-like JPEG: a smooth random colour field (upsampled 8x6 grid) plus mild per-pixel noise."""
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height),
                                                                                      Image.BICUBIC)
    pixels = np.asarray(field, dtype=np.int16) + rng.normal(0, 6, (height, width, 3)).astype(np.int16)
    buf = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def build_photos(n: int, work: Path, questions_per_photo: int = 2) -> dict:
    zp, cp = work / f"photos-{n}.zip", work / f"photos-{n}.csv"
    if zp.exists() and cp.exists():  # built by an earlier run with --keep
        return {"zip": zp, "csv": cp, "images": n, "questions": n * questions_per_photo}
    with zipfile.ZipFile(zp, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            zf.writestr(f"photos/{i:06d}.jpg", photo_jpeg(i))
    with open(cp, "w", newline="") as fh:  # written last: its presence means the ZIP is complete
        w = csv.writer(fh)
        w.writerow(["image", "question", "answer"])
        for i in range(n):
            for q in range(questions_per_photo):
                w.writerow([f"{i:06d}.jpg", f"What is in picture {i}, view {q}?", "colours"])
    return {"zip": zp, "csv": cp, "images": n, "questions": n * questions_per_photo}


def job_workers() -> int:
    """The pool size the cleaning job uses (``datasets_app.jobs.cleaning_workers``, without Django)."""
    configured = int(os.environ.get("CLEANING_WORKERS", "0") or 0)
    return configured if configured > 0 else len(os.sched_getaffinity(0))


def _run(files, out_dir, workers, thumbnails):
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    t, cpu = time.perf_counter(), time.process_time()
    result = clean_dataset(files["csv"], files["zip"], out_dir, workers=workers, thumbnails=thumbnails)
    return time.perf_counter() - t, time.process_time() - cpu, result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="photos", choices=["photos", "easyvqa"])
    ap.add_argument("--photos", type=int, default=1500)
    ap.add_argument("--workers", type=int, default=job_workers(),
                    help="pool size (default: what the cleaning job uses on this machine)")
    ap.add_argument("--rows", default="all", choices=["all", "job", "one"],
                    help="all four rows, only the cleaning job's (pool + thumbnails), or only 1 process + thumbnails")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", help="work folder to keep (default: a temporary folder)")
    args = ap.parse_args(argv)

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-cleaning-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        files = build_photos(args.photos, work) if args.data == "photos" else easy_vqa_files("train", work)
        build_s = time.perf_counter() - t
        zip_mb = os.path.getsize(files["zip"]) / 1e6
        rows = []
        configs = {"all": ((1, False), (args.workers, False), (1, True), (args.workers, True)),
                   "job": ((args.workers, True),), "one": ((1, True),)}[args.rows]
        for workers, thumbnails in configs:
            times, cpus, result = [], [], None
            for i in range(args.repeat):
                seconds, cpu, result = _run(files, work / f"out-{workers}-{thumbnails}-{i}", workers, thumbnails)
                times.append(seconds)
                cpus.append(cpu)
            c = result.counts
            assert c["images_kept"] == files["images"], c  # every photo checked and kept, both ways
            best, median = min(times), sorted(times)[len(times) // 2]
            rows.append((workers, thumbnails, best, median, c["images_in"] / best, c["rows_in"] / best,
                         1000 * min(cpus) / c["images_in"]))
        load = "%.1f / %.1f / %.1f" % os.getloadavg()
        print(f"## clean_dataset, 1 process vs process pool ({platform.machine()}, "
              f"{len(os.sched_getaffinity(0))} usable cores, Python {platform.python_version()}, "
              f"load average {load})\n")
        what = "640x480 photo-like JPEGs" if args.data == "photos" else "easy-VQA train PNGs"
        print(f"Upload: {files['images']:,} {what} ({zip_mb:.1f} MB ZIP), {files['questions']:,} questions; "
              f"built in {build_s:.1f} s. Best of {args.repeat} (median).\n")
        print("| image-check processes | thumbnails (256 px WebP) | wall time | photos/s | rows/s "
              "| CPU ms per photo in the calling process |")
        print("|---|---|---|---|---|---|")
        for workers, thumbnails, best, median, ips, rps, cpu_ms in rows:
            job = " (the cleaning job)" if (workers, thumbnails) == (job_workers(), True) else ""
            print(f"| {workers}{job} | {'yes' if thumbnails else 'no'} | {best:.2f} s ({median:.2f} s) | "
                  f"{ips:,.0f} | {rps:,.0f} | {cpu_ms:.2f} |")
        print("\nWith 1 process the last column is the whole cost of a photo on one core; with the pool it is "
              "what stays in the calling process (unpacking, hashing, ordering), the rest runs on the other cores.")
        print(f"\nPeak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB.")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
