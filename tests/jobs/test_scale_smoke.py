"""The scale benchmark's machinery runs in CI at a small size: a VQAv2-shaped dataset (COCO-named photos,
official questions + annotations JSON) goes through tus uploads (the ZIP's interrupted and resumed) into
gunicorn, a real worker cleans it (80 photos: the image checks run in the process pool), and every photo and
question is kept.

Speed and memory are the benchmark's business (bench/RESULTS-scale.md), never asserted here."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_scale_bench_small(tmp_path):
    out = tmp_path / "scale.md"
    env = {**os.environ, "LOAD_REDIS_URL": os.environ.get("SCALE_REDIS_URL", "redis://127.0.0.1:6379/12")}
    r = subprocess.run([sys.executable, "bench/bench_scale.py", "--photos", "80", "--questions", "800",
                        "--quality", "80", "--timeout", "300", "--out", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    text = out.read_text()
    assert "interrupted and resumed" in text
    assert re.search(r"\| kept photos / questions \| 80 / 800 \|", text), text
