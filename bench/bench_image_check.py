"""CPU cost of the cleaning's image check, per photo, in one process (robust on a shared machine).

    .venv/bin/python bench/bench_image_check.py [--photos 50] [--rounds 16] [--against OTHER/safezip.py]

Times ``gpu_worker.safezip._check_batch`` - exactly what each process of the cleaning pool runs per member:
open, decode, EXIF orientation, and the 256 px WebP thumbnail when asked - on the photo-like 640x480 JPEGs
of ``bench_cleaning.py``, with and without thumbnails, in CPU time (``time.process_time``). With ``--against``
another version of ``safezip.py`` (for example ``git show main:gpu_worker/safezip.py > /tmp/old_safezip.py``)
is timed in the same process, the two interleaved batch by batch so that the machine's load hits both alike.
Printed: min and median CPU ms per photo, and the rate two idle cores would reach at the median
(the unpacking in the calling process, about 0.3-0.4 ms per photo, comes on top: see bench_cleaning.py).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cleaning import photo_jpeg  # noqa: E402

from gpu_worker import safezip  # noqa: E402


def _load(path: str):
    spec = importlib.util.spec_from_file_location("other_safezip", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["other_safezip"] = module   # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--against", help="another safezip.py to time in the same process")
    args = ap.parse_args(argv)
    versions = [("this tree", safezip)] + ([("--against", _load(args.against))] if args.against else [])
    work = Path(tempfile.mkdtemp(prefix="bench-check-"))
    try:
        paths = []
        for i in range(args.photos):
            p = work / f"{i:04d}.jpg"
            p.write_bytes(photo_jpeg(i))
            paths.append(p)
        times: dict = {}
        for rnd in range(args.rounds):
            for thumbs in (False, True):
                order = versions if rnd % 2 == 0 else versions[::-1]
                for label, mod in order:
                    job = [(str(p), str(work / f"{p.stem}-{rnd}.webp") if thumbs else None) for p in paths]
                    cpu = time.process_time()
                    out = mod._check_batch(job, mod.Limits())
                    times.setdefault((label, thumbs), []).append(1000 * (time.process_time() - cpu) / len(paths))
                    assert all(r[0] is None for r in out), out[:2]
        print(f"## image check, CPU ms per 640x480 photo-like JPEG in one process (load average "
              f"{'%.1f / %.1f / %.1f' % os.getloadavg()}, {args.rounds} rounds of {args.photos})\n")
        print("| safezip | thumbnails | min | median | 2 idle cores at the median |")
        print("|---|---|---|---|---|")
        for thumbs in (False, True):
            for label, _mod in versions:
                v = times[(label, thumbs)]
                med = statistics.median(v)
                print(f"| {label} | {'yes' if thumbs else 'no'} | {min(v):.2f} | {med:.2f} | {2000 / med:,.0f} photos/s |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
