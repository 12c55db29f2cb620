"""Benchmark clean_dataset on the full easy-VQA train split (38,575 questions, 4,000 images).

    .venv/bin/python bench/bench_cleaning.py [--split train] [--repeat 3] [--keep DIR]

Builds the upload files (images ZIP + questions CSV) once, then times clean_dataset in a fresh output
folder per repeat and prints a markdown table: wall time, rows/s, images/s, peak Python heap
(tracemalloc, measured in a separate run because tracing slows Python down) and the process's peak RSS.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_worker.cleaning import clean_dataset  # noqa: E402
from gpu_worker.sample_data import easy_vqa_files  # noqa: E402


def _run(files, out_dir):
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    t = time.perf_counter()
    result = clean_dataset(files["csv"], files["zip"], out_dir)
    return time.perf_counter() - t, result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="train", choices=["train", "test"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", help="work folder to keep (default: a temporary folder)")
    args = ap.parse_args(argv)

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-cleaning-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        files = easy_vqa_files(args.split, work)
        build_s = time.perf_counter() - t
        zip_mb = os.path.getsize(files["zip"]) / 1e6
        csv_mb = os.path.getsize(files["csv"]) / 1e6

        times, result = [], None
        for i in range(args.repeat):
            seconds, result = _run(files, work / f"out{i}")
            times.append(seconds)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

        tracemalloc.start()
        _run(files, work / "out-traced")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

        best, median = min(times), sorted(times)[len(times) // 2]
        c = result.counts
        print(f"## clean_dataset on easy-VQA {args.split} ({platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores, Python {platform.python_version()})\n")
        print(f"Upload: {files['images']:,} images ({zip_mb:.1f} MB ZIP), {files['questions']:,} questions "
              f"({csv_mb:.1f} MB CSV); built in {build_s:.1f} s\n")
        print("| metric | value |")
        print("|---|---|")
        print(f"| rows in / kept / dropped | {c['rows_in']:,} / {c['rows_kept']:,} / {c['rows_dropped']:,} |")
        print(f"| images in / kept / dropped | {c['images_in']:,} / {c['images_kept']:,} / {c['images_dropped']:,} |")
        print(f"| wall time, best of {len(times)} (median) | {best:.2f} s ({median:.2f} s) |")
        print(f"| rows/s (best) | {c['rows_in'] / best:,.0f} |")
        print(f"| images/s (best) | {c['images_in'] / best:,.0f} |")
        print(f"| peak Python heap (tracemalloc) | {peak / 1e6:.1f} MB |")
        print(f"| peak RSS of the process | {rss_mb:.0f} MB |")
        print(f"| result level | {result.level} |")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
