"""The load benchmark's machinery runs in CI at a small size: gunicorn + a real worker on loopback,
predict + list endpoints under 20 concurrent clients, and no request may fail.

Latency and throughput are the benchmark's business (bench/RESULTS-load.md), never asserted here.
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bounded_load_has_no_errors(tmp_path):
    out = tmp_path / "load.md"
    r = subprocess.run(
        [sys.executable, "bench/bench_load.py", "--configs", "4x1", "--requests", "200", "--concurrency", "20",
         "--max-seconds", "120", "--train-items", "60", "--epochs", "1", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=400,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and not line.startswith("| endpoint")]
    endpoints = {line.split("|")[1].strip() for line in rows}
    assert {"predict", "GET /api/v1/projects/", "GET /api/v1/predictions/", "project page (session)"} <= endpoints
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[2] == "0", f"errors under load: {line}"
        if not cells[0].startswith("**"):
            assert int(cells[1].replace(",", "")) > 0, line
    assert re.search(r"\*\*all\*\* \| 200 of 200 planned \| 0 \|", out.read_text())
