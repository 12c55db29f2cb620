"""Process-wide malloc settings for the jobs' processes (glibc).

- **Arenas.** glibc gives every thread that allocates its own malloc arena, up to eight per core, and memory a
  thread frees stays in its arena for that thread to reuse. A job's threads (the image decoders of
  ``encode``, the heartbeat, torch's) each keep such a reserve.
- **The mmap threshold.** Blocks above it are mapped on their own and go back to the system when freed.
  glibc raises it (up to 32 MB) each time such a block is freed, so a job's later large temporaries (a
  window's encodings) come from the heap and stay there. A fixed threshold keeps them mapped. It is 16 MiB,
  above a training step's tensors: at 1 MiB every step mapped and unmapped its batches, and training easy-VQA
  took ~30 % longer (56 s instead of 43 s for 3 epochs on 4,000 images; 39 s at 16 MiB).

Training the default model on 440,000 questions (``bench/bench_train_memory.py``) peaked at 787 MB with
glibc's defaults, 750 MB with two arenas, 741 MB with the threshold fixed at 16 MiB as well (721 MB at 1 MiB).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["tune_malloc"]

_M_MMAP_THRESHOLD = -3   # mallopt parameters (malloc.h)
_M_ARENA_MAX = -8
_DEFAULTS = {"arenas": 2, "mmap_bytes": 16 << 20}


def _setting(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw.isdigit() else default


def tune_malloc(arenas: int | None = None, mmap_bytes: int | None = None) -> dict:
    """Cap glibc's malloc arenas and fix its mmap threshold for this process (and the ones it forks from now on).

    ``arenas``: default ``PIGGYBACK_MALLOC_ARENAS`` (2); ``mmap_bytes``: default ``PIGGYBACK_MALLOC_MMAP_BYTES``
    (16 MiB). ``0`` leaves glibc's default for that one, and so does glibc's own variable in the environment
    (``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_``), read at start. Off glibc nothing changes. Returns
    ``{"arenas": bool, "mmap_threshold": bool}``: which were set. Call it before the job starts threads."""
    arenas = _setting("PIGGYBACK_MALLOC_ARENAS", _DEFAULTS["arenas"]) if arenas is None else arenas
    mmap_bytes = _setting("PIGGYBACK_MALLOC_MMAP_BYTES", _DEFAULTS["mmap_bytes"]) if mmap_bytes is None else mmap_bytes
    done = {"arenas": False, "mmap_threshold": False}
    if not sys.platform.startswith("linux"):
        return done
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):   # not glibc (musl has no mallopt)
        return done
    if arenas > 0 and not os.environ.get("MALLOC_ARENA_MAX"):
        done["arenas"] = bool(mallopt(_M_ARENA_MAX, int(arenas)))
    if mmap_bytes > 0 and not os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        done["mmap_threshold"] = bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_bytes)))
    return done
