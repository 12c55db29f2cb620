"""Files go through Django's storage API (local folder or S3-compatible store).

* Pages and API serve files only through permission-checked views (:func:`serve_file`), streamed: from S3
  the object's body is passed on as it arrives, never held whole in memory.
* Workers (and the web process, for single predictions and exports) call :func:`local_copy` /
  :func:`local_dir` to get local paths: a no-op for the local filesystem storage, a download into their own
  ``WORKER_CACHE_DIR`` for remote stores, so no filesystem is shared between web and workers. Results go
  back with :func:`save_local` / :func:`save_tree`.
* With django-storages' S3 backend, transfers use boto3's transfer manager (multipart and parallel ranged
  reads above ``AWS_S3_MULTIPART_THRESHOLD``, straight between disk and bucket), folders are synced with
  one listing per 1,000 objects and many small files move on a few threads; other remote storages go
  through the plain Storage API.
* Resumable (tus) uploads append straight into storage: to a local file (:func:`append_stream`) or, on S3,
  as parts of one multipart upload with the unfinished tail in a small object (:func:`append_parts`);
  :func:`move` is then a rename or a server-side copy + delete.
"""
from __future__ import annotations

import hashlib
import io
import math
import mimetypes
import os
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404

CHUNK = 1024 * 1024
TRANSFER_THREADS = 8  # concurrent small-file transfers (folders of images, overlays, model files)
S3_MIN_PART = 5 * 1024 * 1024  # S3's smallest part (every part but the last)
S3_MAX_PARTS = 10_000  # S3's most parts in one multipart upload


def _copy_config():
    """Server-side copies (moves) in big parts: a 50 GB upload is ~200 UploadPartCopy calls, 10 at a time."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=256 * 1024 * 1024, multipart_chunksize=256 * 1024 * 1024,
                          max_concurrency=10)


def storage_path(name: str) -> Path | None:
    """The file's path on this machine when the storage is a local folder, else None (e.g. S3)."""
    try:
        return Path(default_storage.path(name))
    except NotImplementedError:
        return None


def is_local_storage() -> bool:
    return storage_path("") is not None


# ------------------------------------------------------------------------------------------ S3 (boto3)
class _S3:
    """The boto3 side of django-storages' S3Storage: one client (thread-safe, shared by the transfer threads),
    object keys as the storage names them (``location`` prefix included) and its upload parameters."""

    def __init__(self, storage):
        from storages.utils import clean_name

        self.storage = storage
        self.client = storage.connection.meta.client
        self.bucket = storage.bucket_name
        self.config = storage.transfer_config
        self._clean = clean_name

    def key(self, name: str) -> str:
        return self.storage._normalize_name(self._clean(name))

    def upload(self, local: Path, name: str) -> None:
        """One PUT (multipart above the threshold); replaces the object atomically, so no delete first."""
        key = self.key(name)
        self.client.upload_file(str(local), self.bucket, key, ExtraArgs=self.storage._get_write_parameters(key),
                                Config=self.config)

    def download(self, name: str, dest: Path) -> None:
        """Straight to disk (parallel ranged GETs above the threshold); FileNotFoundError when missing."""
        try:
            self.client.download_file(self.bucket, self.key(name), str(dest), Config=self.config)
        except Exception as exc:
            raise _missing(exc, name) from exc

    def get(self, name: str):
        """(streaming body, size) of an object; FileNotFoundError when missing."""
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.key(name))
        except Exception as exc:
            raise _missing(exc, name) from exc
        return obj["Body"], obj["ContentLength"]

    def listing(self, prefix: str):
        """(relative name, size, mtime) of every object under ``prefix/``."""
        root = self.key(prefix).rstrip("/") + "/"
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=root):
            for obj in page.get("Contents", ()):
                rel = obj["Key"][len(root):]
                if rel and not rel.endswith("/"):
                    yield rel, obj["Size"], obj["LastModified"].timestamp()

    def delete_prefix(self, prefix: str) -> None:
        keys = [{"Key": self.key(f"{prefix}/{rel}")} for rel, _, _ in self.listing(prefix)]
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys[i:i + 1000], "Quiet": True})

    def copy(self, src: str, dest: str) -> None:
        """Server-side copy (no byte passes through this process); multipart copy for big objects, so
        objects beyond CopyObject's 5 GB limit copy too."""
        key = self.key(dest)
        self.client.copy({"Bucket": self.bucket, "Key": self.key(src)}, self.bucket, key,
                         ExtraArgs=self.storage._get_write_parameters(key), Config=_copy_config())

    def put_bytes(self, name: str, data: bytes) -> None:
        key = self.key(name)
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **self.storage._get_write_parameters(key))

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(name))

    def range(self, name: str, start: int, size: int) -> bytes:
        """``size`` bytes from ``start`` (fewer at the end of the object): one ranged GET."""
        if size <= 0:
            return b""
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.key(name), Range=f"bytes={start}-{start + size - 1}")
        except Exception as exc:
            if str((getattr(exc, "response", None) or {}).get("Error", {}).get("Code", "")) == "InvalidRange":
                return b""  # at or past the end
            raise _missing(exc, name) from exc
        with closing(obj["Body"]) as body:
            return body.read()


def _missing(exc: Exception, name: str) -> Exception:
    """botocore's 404 as FileNotFoundError; anything else unchanged."""
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    if code in ("404", "NoSuchKey", "NotFound", "NoSuchUpload"):
        return FileNotFoundError(f"{name} is not in the storage")
    return exc


def _s3() -> _S3 | None:
    """The S3 helper when the default storage is django-storages' S3Storage, else None."""
    if is_local_storage():
        return None
    storage = default_storage._wrapped  # set up by is_local_storage()
    if not (hasattr(storage, "bucket_name") and hasattr(storage, "transfer_config")):
        return None
    cached = getattr(storage, "_piggyback_s3", None)
    if cached is None:
        cached = storage._piggyback_s3 = _S3(storage)
    return cached


# ------------------------------------------------------------------------------------------ local copies
def cache_path(name: str) -> Path:
    """Where :func:`local_copy` keeps a remote file in this process's WORKER_CACHE_DIR."""
    digest = hashlib.sha256(name.encode()).hexdigest()[:24]
    return Path(settings.WORKER_CACHE_DIR) / "files" / digest / Path(name).name


def _part(target: Path) -> Path:
    """A unique temporary name beside ``target`` (processes sharing a cache never write the same file)."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.part")


def _download(name: str, target: Path, s3: _S3 | None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _part(target)
    try:
        if s3 is not None:
            s3.download(name, tmp)
        else:
            with default_storage.open(name, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def local_copy(name: str) -> Path:
    """A local path for a stored file (cached under WORKER_CACHE_DIR for remote storages)."""
    path = storage_path(name)
    if path is not None:
        return path
    target = cache_path(name)
    if not target.exists():
        _download(name, target, _s3())
    return target


_SYNCED: dict[Path, float] = {}  # folder -> when this process last synced it (time.monotonic)


def local_dir(prefix: str, *, max_age: float = 0.0) -> Path:
    """A local folder for a storage prefix (synced from a remote store when needed).

    ``max_age``: seconds during which a folder this process has already synced is used as it is (serving
    a finished model asks for its folder on every prediction; its files never change)."""
    path = storage_path(prefix)
    if path is not None:
        return path
    digest = hashlib.sha256(prefix.encode()).hexdigest()[:24]
    target = Path(settings.WORKER_CACHE_DIR) / "dirs" / digest
    last = _SYNCED.get(target)
    if max_age and last is not None and time.monotonic() - last < max_age and target.is_dir():
        return target
    s3 = _s3()
    if s3 is not None:
        _sync_dir(s3, prefix.rstrip("/"), target)
    else:
        _materialise(prefix.rstrip("/"), target)
    _SYNCED[target] = time.monotonic()
    return target


def _sync_dir(s3: _S3, prefix: str, target: Path) -> None:
    """Make ``target`` mirror the objects under ``prefix``: fetch what is missing or changed (size or
    modification time), drop local files the bucket no longer has."""
    target.mkdir(parents=True, exist_ok=True)
    remote, todo = set(), []
    for rel, size, mtime in s3.listing(prefix):
        remote.add(rel)
        local = target / rel
        try:
            st = local.stat()
            if st.st_size == size and int(st.st_mtime) == int(mtime):
                continue
        except FileNotFoundError:
            pass
        todo.append((rel, local, mtime))

    def fetch(job):
        rel, local, mtime = job
        _download(f"{prefix}/{rel}", local, s3)
        os.utime(local, (mtime, mtime))

    _run_all(fetch, todo)
    for path in list(target.rglob("*")):
        rel = path.relative_to(target).as_posix()
        if path.is_file() and rel not in remote and not path.name.endswith(".part"):
            path.unlink(missing_ok=True)


def _run_all(fn, jobs: list) -> None:
    """``fn`` over ``jobs`` on a few threads (network-bound transfers); the first error is raised."""
    if len(jobs) <= 1:
        for job in jobs:
            fn(job)
        return
    with ThreadPoolExecutor(max_workers=min(TRANSFER_THREADS, len(jobs))) as pool:
        for _ in pool.map(fn, jobs):
            pass


def _materialise(prefix: str, target: Path) -> None:
    dirs, files = default_storage.listdir(prefix)
    target.mkdir(parents=True, exist_ok=True)
    for f in files:
        dst = target / f
        if not dst.exists():
            with default_storage.open(f"{prefix}/{f}", "rb") as src, open(dst, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
    for d in dirs:
        _materialise(f"{prefix}/{d}", target / d)


# ------------------------------------------------------------------------------------------ storing
def save_local(local_path: Path | str, name: str) -> str:
    """Store a local file under exactly ``name`` (replacing it); returns the stored name."""
    local_path = Path(local_path)
    dest = storage_path(name)
    if dest is not None and dest.resolve() == local_path.resolve():
        return name
    s3 = _s3() if dest is None else None
    if s3 is not None:
        s3.upload(local_path, name)
        return name
    if default_storage.exists(name):
        default_storage.delete(name)
    with open(local_path, "rb") as fh:
        return default_storage.save(name, File(fh))


def save_tree(local_root: Path | str, prefix: str, *, unchanged: dict | None = None) -> list[str]:
    """Store every file under ``local_root`` at ``prefix/<relative path>``.

    ``unchanged``: a dict kept by the caller between calls; files whose size and modification time are the
    same as at the previous call are not sent again (a training run syncs its folder after every epoch)."""
    local_root = Path(local_root)
    jobs = []
    for path in sorted(local_root.rglob("*")):
        if path.is_file() and not path.name.endswith(".part"):
            rel = path.relative_to(local_root).as_posix()
            st = path.stat()
            if unchanged is not None and unchanged.get(rel) == (st.st_size, st.st_mtime_ns):
                continue
            jobs.append((path, f"{prefix}/{rel}", rel, (st.st_size, st.st_mtime_ns)))
    stored = []

    def put(job):
        path, name, rel, stamp = job
        stored.append(save_local(path, name))
        if unchanged is not None:
            unchanged[rel] = stamp

    if _s3() is not None:
        _run_all(put, jobs)
    else:
        for job in jobs:
            put(job)
    return sorted(stored)


def delete_prefix(prefix: str) -> None:
    """Remove everything stored under ``prefix`` (a folder, or every object with that key prefix)."""
    root = storage_path(prefix)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)
        return
    s3 = _s3()
    if s3 is not None:
        s3.delete_prefix(prefix)
        return
    try:
        dirs, names = default_storage.listdir(prefix)
    except (FileNotFoundError, OSError):
        return
    for n in names:
        default_storage.delete(f"{prefix}/{n}")
    for d in dirs:
        delete_prefix(f"{prefix}/{d}")


# ------------------------------------------------------------------------------------------ reading
def open_stream(name: str):
    """A binary file-like object reading a stored file as it is consumed (from S3: the GET's body).

    Raises FileNotFoundError when the file is not there; use it as a context manager."""
    s3 = _s3()
    if s3 is None:
        if not name or not default_storage.exists(name):
            raise FileNotFoundError(f"{name} is not in the storage")
        return default_storage.open(name, "rb")
    return s3.get(name)[0]


def serve_file(name: str, *, download_name: str | None = None, as_attachment: bool = False) -> FileResponse:
    """Stream a stored file; the caller has already checked that the user may see it."""
    s3 = _s3()
    size = None
    try:
        if not name:
            raise FileNotFoundError(name)
        if s3 is not None:
            stream, size = s3.get(name)  # one GET; the body is read chunk by chunk as the response is sent
        else:
            stream = open_stream(name)
    except FileNotFoundError:
        raise Http404("This file is not there any more.") from None
    content_type, _ = mimetypes.guess_type(download_name or name)
    response = FileResponse(
        stream,
        as_attachment=as_attachment,
        filename=download_name or Path(name).name,
        content_type=content_type or "application/octet-stream",
    )
    if size is not None:
        response["Content-Length"] = str(size)
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, max-age=3600"
    return response


# ------------------------------------------------------------------------------------------------
# Appending (resumable uploads): bytes go straight to their stored file, no second full copy
# ------------------------------------------------------------------------------------------------
class AppendNotSupported(Exception):
    """The storage backend cannot append to a stored file (implemented: local folders and S3)."""


def start_resumable(name: str) -> str:
    """Prepare ``name`` for appending: an empty file on a local disk (returns ""), a multipart upload on S3
    (returns its UploadId, which :func:`append_parts` then needs). Other storages: AppendNotSupported."""
    if storage_path(name) is not None:
        create_empty(name)
        return ""
    s3 = _s3()
    if s3 is None:
        raise AppendNotSupported(name)
    key = s3.key(name)
    return s3.client.create_multipart_upload(Bucket=s3.bucket, Key=key,
                                             **s3.storage._get_write_parameters(key))["UploadId"]


def create_empty(name: str) -> None:
    """Make an empty stored file at exactly ``name`` (the target of later :func:`append_stream` calls)."""
    path = storage_path(name)
    if path is None:
        raise AppendNotSupported(name)  # S3: start_resumable / append_parts
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


def part_size(length: int, wanted: int) -> int:
    """The S3 part size for an upload of ``length`` bytes: ``wanted``, at least S3's 5 MiB minimum, and
    large enough that the upload fits in S3's 10,000 parts."""
    return max(int(wanted), S3_MIN_PART, math.ceil(length / S3_MAX_PARTS))


def tails_prefix(name: str) -> str:
    """Where the not-yet-uploaded tails of the S3 upload ``name`` are kept (one object per recorded state)."""
    return f"{name}.tail"


def append_parts(name: str, upload_id: str, parts: list[dict], tail: str, offset: int, stream, max_bytes: int, *,
                 length: int, part_bytes: int, chunk: int = CHUNK) -> tuple[int, list[dict], str]:
    """Append up to ``max_bytes`` from ``stream`` to the S3 multipart upload ``upload_id`` at ``name``.

    The recorded state is ``parts`` (``{"n", "etag", "size"}`` of the uploaded parts) and ``tail`` (the stored
    name of an object holding the bytes after the last part, fewer than a part; "" when none), so the offset is
    the parts' sizes + the tail's. The tail and the new bytes are sent as parts of ``part_bytes`` as they fill
    (one part in memory at a time); what is left becomes a NEW tail object (named by its end offset: the
    recorded one is never overwritten, so the state stays consistent until the caller records the new one
    and deletes the old). When the bytes reach ``length``, the rest goes up as the last part and the upload
    is completed. A stream that breaks off keeps what arrived, like :func:`append_stream`.

    Returns (bytes written, new parts, new tail name). FileNotFoundError when the multipart upload or the
    recorded tail is no longer in the bucket."""
    s3 = _s3()
    if s3 is None:
        raise AppendNotSupported(name)
    if offset >= length:  # complete already (an empty PATCH at the end)
        return 0, list(parts), tail
    buf = bytearray()
    if tail:
        body, _ = s3.get(tail)
        with closing(body):
            buf += body.read()  # less than one part
    parts = list(parts)
    if sum(p["size"] for p in parts) + len(buf) != offset:
        raise RuntimeError(f"the stored parts of {name} do not add up to its offset {offset}")
    written = 0
    while True:
        if len(buf) >= part_bytes:
            parts.append(_upload_part(s3, name, upload_id, len(parts) + 1, buf))
            buf = bytearray()
        if written >= max_bytes:
            break
        try:
            data = stream.read(min(chunk, max_bytes - written, part_bytes - len(buf)))
        except OSError:  # the client went away mid-chunk
            break
        if not data:
            break
        buf += data
        written += len(data)
    end = offset + written
    if end == length:
        if buf or not parts:
            parts.append(_upload_part(s3, name, upload_id, len(parts) + 1, buf))
        try:
            s3.client.complete_multipart_upload(
                Bucket=s3.bucket, Key=s3.key(name), UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": p["n"], "ETag": p["etag"]} for p in parts]})
        except Exception as exc:
            raise _missing(exc, name) from exc
        s3.delete_prefix(tails_prefix(name))  # the recorded tail and any a crashed request left
        return written, parts, ""
    if written == 0:
        return 0, parts, tail
    new_tail = f"{tails_prefix(name)}/{end}" if buf else ""
    if buf:
        s3.put_bytes(new_tail, bytes(buf))
    return written, parts, new_tail


def _upload_part(s3: _S3, name: str, upload_id: str, number: int, data: bytearray) -> dict:
    """One part; FileNotFoundError when the multipart upload is gone (aborted, e.g. by a lifecycle rule)."""
    try:
        etag = s3.client.upload_part(Bucket=s3.bucket, Key=s3.key(name), UploadId=upload_id, PartNumber=number,
                                     Body=data)["ETag"]
    except Exception as exc:
        raise _missing(exc, name) from exc
    return {"n": number, "etag": etag, "size": len(data)}


def discard_tail(tail: str) -> None:
    """Delete a tail object that a newer recorded state has replaced."""
    s3 = _s3()
    if tail and s3 is not None:
        s3.delete(tail)


def abort_resumable(name: str, upload_id: str) -> None:
    """Abort the S3 multipart upload (its parts are freed; done already is fine) and delete its tails."""
    s3 = _s3()
    if s3 is None or not upload_id:
        return
    try:
        s3.client.abort_multipart_upload(Bucket=s3.bucket, Key=s3.key(name), UploadId=upload_id)
    except Exception as exc:
        if str((getattr(exc, "response", None) or {}).get("Error", {}).get("Code", "")) != "NoSuchUpload":
            raise
    s3.delete_prefix(tails_prefix(name))


class _RangedReader(io.RawIOBase):
    """A seekable read-only view of an S3 object, each read one ranged GET: sniffing the first bytes of a
    big upload without downloading it (django-storages' S3File fetches the whole object on the first read)."""

    def __init__(self, s3: _S3, name: str, size: int):
        super().__init__()
        self._s3, self.name, self._size, self._pos = s3, name, size, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._pos

    def seek(self, pos, whence=io.SEEK_SET):
        self._pos = max(0, {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence] + pos)
        return self._pos

    def read(self, n=-1):
        n = self._size - self._pos if n is None or n < 0 else min(n, self._size - self._pos)
        data = self._s3.range(self.name, self._pos, n)
        self._pos += len(data)
        return data

    def readinto(self, b):
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


def open_ranged(name: str, size: int):
    """A seekable binary reader of a stored file of ``size`` bytes that reads only what is asked for."""
    s3 = _s3()
    if s3 is None:
        return default_storage.open(name, "rb")
    return _RangedReader(s3, name, size)


def move(src: str, dest: str) -> str:
    """Give a stored file a new name: a rename on local disks, a server-side copy + delete on S3 (no byte
    through this process), a copy + delete through the Storage API elsewhere."""
    src_path, dest_path = storage_path(src), storage_path(dest)
    if src_path is not None and dest_path is not None:
        dest_path.parent.mkdir(parents=True, exist_ok=True)
        src_path.replace(dest_path)
        return dest
    s3 = _s3()
    if s3 is not None:
        s3.copy(src, dest)
        s3.delete(src)
        return dest
    with default_storage.open(src, "rb") as fh:
        stored = default_storage.save(dest, File(fh))
    default_storage.delete(src)
    return stored
