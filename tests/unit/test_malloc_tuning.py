"""Jobs set glibc's malloc arenas and mmap threshold (gpu_worker.memory): with glibc's defaults, training on 440,000
questions held ~65 MB more (bench/bench_train_memory.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpu_worker.memory import tune_malloc

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

ROOT = Path(__file__).resolve().parents[2]
_PROBE = "import json; from gpu_worker.memory import tune_malloc; print(json.dumps(tune_malloc()))"
_OURS = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "PIGGYBACK_MALLOC_ARENAS", "PIGGYBACK_MALLOC_MMAP_BYTES")


def _probe(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _OURS}
    out = subprocess.run([sys.executable, "-c", _PROBE], env={**env, **extra}, capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return json.loads(out.stdout)


def test_set_by_default_and_each_can_be_left_to_glibc():
    assert _probe() == {"arenas": True, "mmap_threshold": True}
    assert _probe(PIGGYBACK_MALLOC_ARENAS="4", PIGGYBACK_MALLOC_MMAP_BYTES="4194304") == \
        {"arenas": True, "mmap_threshold": True}
    assert _probe(PIGGYBACK_MALLOC_ARENAS="0") == {"arenas": False, "mmap_threshold": True}
    assert _probe(PIGGYBACK_MALLOC_MMAP_BYTES="0") == {"arenas": True, "mmap_threshold": False}
    # the operator's own glibc variables win
    assert _probe(MALLOC_ARENA_MAX="3", MALLOC_MMAP_THRESHOLD_="65536") == {"arenas": False, "mmap_threshold": False}


def test_explicit_values():
    assert tune_malloc(0, 0) == {"arenas": False, "mmap_threshold": False}
