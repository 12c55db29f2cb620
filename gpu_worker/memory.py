"""Process-wide memory settings for the jobs' processes.

glibc gives every thread that allocates its own malloc arena, up to eight per core, and memory a thread frees
stays in its arena for that thread to reuse. A job's threads (the image decoders of ``encode``, the heartbeat,
torch's) each keep such a reserve: training the default model on 440,000 questions peaked at 787 MB with
glibc's default and at 737 MB with two arenas (``bench/bench_train_memory.py``), at the same speed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["limit_malloc_arenas"]

_M_ARENA_MAX = -8   # mallopt parameter (malloc.h)
_DEFAULT_ARENAS = 2


def limit_malloc_arenas(arenas: int | None = None) -> bool:
    """Cap glibc's malloc arenas for this process (and the processes it forks from now on).

    ``arenas``: default ``PIGGYBACK_MALLOC_ARENAS`` (2; ``0`` leaves glibc's default). Nothing is changed
    when ``MALLOC_ARENA_MAX`` is set in the environment (glibc read it at start) or off glibc. Returns whether
    the cap was set. Arenas that threads already have are kept; call it before the job starts threads."""
    if arenas is None:
        raw = os.environ.get("PIGGYBACK_MALLOC_ARENAS", "").strip()
        arenas = int(raw) if raw.isdigit() else _DEFAULT_ARENAS
    if arenas <= 0 or os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, int(arenas)))
    except (OSError, AttributeError):   # not glibc (musl has no mallopt)
        return False
