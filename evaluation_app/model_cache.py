"""Loaded models stay in memory in the serving process (web or worker), so a single question does not
reload its model from disk.

An LRU of ``EVAL_MODEL_CACHE_SIZE`` (default 3) adapters keyed by (folder, model key, mtime of the
folder's weights): re-training into the same folder changes the mtime and loads the new weights.
One lock guards the LRU; a per-entry lock serialises loading (two requests for a cold model load it once)
and inference (adapters toggle attention outputs and are not re-entrant).
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from gpu_worker.errors import AppError, Unavailable

_LOCK = threading.Lock()
_ENTRIES: "OrderedDict[tuple, _Entry]" = OrderedDict()
STATS = {"hits": 0, "misses": 0, "evictions": 0}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "config.json", "piggyback.json")


class _Entry:
    def __init__(self):
        self.lock = threading.Lock()
        self.adapter = None


def capacity() -> int:
    return max(1, int(getattr(settings, "EVAL_MODEL_CACHE_SIZE", 3)))


def model_folder_for(run_or_model) -> str:
    """Local path (or hub id) of the weights behind a TrainingRun or a PretrainedModel.

    A TrainingRun's ``output_dir`` is a storage prefix (``projects/<p>/runs/<id>``) whose ``model/``
    sub-folder is the ``from_pretrained`` folder; a PretrainedModel's ``source`` is a local folder or a
    hub id (only usable when the hub cache has it).
    """
    return run_or_model.model_folder()


def registry_key_for(run_or_model) -> str:
    model = run_or_model.pretrained
    return model.registry_key or model.key


def _mtime(folder: str) -> float:
    path = Path(folder)
    if not path.is_dir():
        return 0.0
    stamps = [os.stat(path / name).st_mtime for name in _WEIGHT_FILES if (path / name).exists()]
    return max(stamps) if stamps else os.stat(path).st_mtime


def _entry_for(folder: str, model_key: str | None) -> tuple[_Entry, bool]:
    key = (folder, model_key or "", _mtime(folder))
    with _LOCK:
        entry = _ENTRIES.get(key)
        if entry is not None:
            _ENTRIES.move_to_end(key)
            STATS["hits"] += 1
            return entry, True
        # an older version of the same folder is stale: drop it
        for old in [k for k in _ENTRIES if k[0] == folder and k[1] == key[1]]:
            del _ENTRIES[old]
        entry = _ENTRIES[key] = _Entry()
        STATS["misses"] += 1
        while len(_ENTRIES) > capacity():
            _ENTRIES.popitem(last=False)
            STATS["evictions"] += 1
        return entry, False


@contextmanager
def use_model(folder: str, model_key: str | None = None):
    """``with use_model(folder, key) as adapter:`` — the cached adapter, held exclusively meanwhile."""
    from gpu_worker.predict import load_model

    entry, _ = _entry_for(str(folder), model_key)
    with entry.lock:
        if entry.adapter is None:
            _limit_torch_threads()
            try:
                entry.adapter = load_model(str(folder), model_key=model_key, device=getattr(settings, "EVAL_DEVICE", None))
            except AppError:
                _forget(entry)
                raise
            except Exception as exc:  # a broken folder: say so, and do not keep the empty entry
                _forget(entry)
                raise Unavailable(f"The model could not be loaded ({type(exc).__name__}: {exc}).") from exc
        yield entry.adapter


_THREADS_SET = False


def _limit_torch_threads() -> None:
    """``PIGGYBACK_TORCH_THREADS`` (env or setting): torch's intra-op threads in this process, applied before
    its first model load. Web processes set 1: several gunicorn workers x threads each running a small model
    on all cores oversubscribe the CPU (each request waits on the others' thread pools)."""
    global _THREADS_SET
    if _THREADS_SET:
        return
    _THREADS_SET = True
    value = os.environ.get("PIGGYBACK_TORCH_THREADS") or getattr(settings, "PIGGYBACK_TORCH_THREADS", "")
    if str(value).strip().isdigit() and int(value) > 0:
        import torch

        torch.set_num_threads(int(value))


def _forget(entry: _Entry) -> None:
    with _LOCK:
        for k, v in list(_ENTRIES.items()):
            if v is entry:
                del _ENTRIES[k]


def clear() -> None:
    with _LOCK:
        _ENTRIES.clear()
        for k in STATS:
            STATS[k] = 0
