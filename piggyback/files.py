"""Files go through Django's storage API (local folder or S3-compatible store).

* Pages and API serve files only through permission-checked views (:func:`serve_file`).
* Workers call :func:`local_copy` to get a local path (a no-op for the local filesystem storage,
  a cached download for remote stores) and :func:`save_local` to store results.
"""
from __future__ import annotations

import hashlib
import mimetypes
import shutil
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404


def storage_path(name: str) -> Path | None:
    """The file's path on this machine when the storage is a local folder, else None (e.g. S3)."""
    try:
        return Path(default_storage.path(name))
    except NotImplementedError:
        return None


def is_local_storage() -> bool:
    return storage_path("") is not None


def local_copy(name: str) -> Path:
    """A local path for a stored file (cached under WORKER_CACHE_DIR for remote storages)."""
    path = storage_path(name)
    if path is not None:
        return path
    digest = hashlib.sha256(name.encode()).hexdigest()[:24]
    target = Path(settings.WORKER_CACHE_DIR) / "files" / digest / Path(name).name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".part")
        with default_storage.open(name, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
        tmp.replace(target)
    return target


def local_dir(prefix: str) -> Path:
    """A local folder for a storage prefix (materialised from a remote store when needed)."""
    path = storage_path(prefix)
    if path is not None:
        return path
    digest = hashlib.sha256(prefix.encode()).hexdigest()[:24]
    target = Path(settings.WORKER_CACHE_DIR) / "dirs" / digest
    _materialise(prefix.rstrip("/"), target)
    return target


def _materialise(prefix: str, target: Path) -> None:
    dirs, files = default_storage.listdir(prefix)
    target.mkdir(parents=True, exist_ok=True)
    for f in files:
        dst = target / f
        if not dst.exists():
            with default_storage.open(f"{prefix}/{f}", "rb") as src, open(dst, "wb") as out:
                shutil.copyfileobj(src, out, 1024 * 1024)
    for d in dirs:
        _materialise(f"{prefix}/{d}", target / d)


def save_local(local_path: Path | str, name: str) -> str:
    """Store a local file under exactly ``name`` (replacing it); returns the stored name."""
    local_path = Path(local_path)
    dest = storage_path(name)
    if dest is not None and dest.resolve() == local_path.resolve():
        return name
    if default_storage.exists(name):
        default_storage.delete(name)
    with open(local_path, "rb") as fh:
        return default_storage.save(name, File(fh))


def save_tree(local_root: Path | str, prefix: str) -> list[str]:
    """Store every file under ``local_root`` at ``prefix/<relative path>``."""
    local_root = Path(local_root)
    stored = []
    for path in sorted(local_root.rglob("*")):
        if path.is_file():
            stored.append(save_local(path, f"{prefix}/{path.relative_to(local_root).as_posix()}"))
    return stored


def serve_file(name: str, *, download_name: str | None = None, as_attachment: bool = False) -> FileResponse:
    """Stream a stored file; the caller has already checked that the user may see it."""
    if not name or not default_storage.exists(name):
        raise Http404("This file is not there any more.")
    content_type, _ = mimetypes.guess_type(download_name or name)
    response = FileResponse(
        default_storage.open(name, "rb"),
        as_attachment=as_attachment,
        filename=download_name or Path(name).name,
        content_type=content_type or "application/octet-stream",
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, max-age=3600"
    return response


# ------------------------------------------------------------------------------------------------
# Appending (resumable uploads): bytes go straight to their stored file, no second full copy
# ------------------------------------------------------------------------------------------------
class AppendNotSupported(Exception):
    """The storage backend cannot append to a stored file (implemented: local folders)."""


def create_empty(name: str) -> None:
    """Make an empty stored file at exactly ``name`` (the target of later :func:`append_stream` calls)."""
    path = storage_path(name)
    if path is None:
        # S3 would start a multipart upload here and append parts; not implemented in this version
        raise AppendNotSupported(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(exist_ok=False)


def append_stream(name: str, offset: int, stream, max_bytes: int, chunk: int = 1024 * 1024) -> int:
    """Write up to ``max_bytes`` from ``stream`` at ``offset`` of the stored file; returns the bytes written.

    Whatever arrived before the stream broke off (a dropped connection) stays written: the caller
    records the new offset and the client resumes from there."""
    path = storage_path(name)
    if path is None:
        raise AppendNotSupported(name)
    written = 0
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.truncate()  # bytes past the recorded offset (a write cut short before it was recorded) go
        while written < max_bytes:
            try:
                data = stream.read(min(chunk, max_bytes - written))
            except OSError:  # the client went away mid-chunk
                break
            if not data:
                break
            fh.write(data)
            written += len(data)
    return written


def move(src: str, dest: str) -> str:
    """Give a stored file a new name (a rename on local disks, a copy + delete elsewhere)."""
    src_path, dest_path = storage_path(src), storage_path(dest)
    if src_path is not None and dest_path is not None:
        dest_path.parent.mkdir(parents=True, exist_ok=True)
        src_path.replace(dest_path)
        return dest
    with default_storage.open(src, "rb") as fh:
        stored = default_storage.save(dest, File(fh))
    default_storage.delete(src)
    return stored
