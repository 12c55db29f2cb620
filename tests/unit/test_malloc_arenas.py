"""Jobs cap glibc's malloc arenas (gpu_worker.memory): each thread that allocates would otherwise keep a reserve
of its own, ~50 MB more when training on 440,000 questions (bench/bench_train_memory.py)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from gpu_worker.memory import limit_malloc_arenas

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

_PROBE = """
import sys
from gpu_worker.memory import limit_malloc_arenas
print(limit_malloc_arenas())
"""


def _probe(env_extra: dict) -> str:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "PIGGYBACK_MALLOC_ARENAS")}
    out = subprocess.run([sys.executable, "-c", _PROBE], env={**env, **env_extra}, capture_output=True, text=True,
                         check=True, cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    return out.stdout.strip()


def test_cap_is_set_by_default_and_can_be_turned_off():
    assert _probe({}) == "True"
    assert _probe({"PIGGYBACK_MALLOC_ARENAS": "4"}) == "True"
    assert _probe({"PIGGYBACK_MALLOC_ARENAS": "0"}) == "False"     # glibc's default kept
    assert _probe({"MALLOC_ARENA_MAX": "3"}) == "False"            # the operator's own setting wins


def test_explicit_values():
    assert limit_malloc_arenas(0) is False
    assert limit_malloc_arenas(8) is True
