"""Open an uploaded images ZIP without trusting anything in it.

Never ``extractall``: we walk ``infolist()`` ourselves and, member by member,

* refuse absolute paths, ``..`` components, symbolic links and encrypted members (recorded as skipped),
* ignore directories, ``__MACOSX/`` resource forks and dotfiles (``.DS_Store``),
* count the bytes WHILE copying in chunks (the sizes in the headers are whatever the sender wrote),
  and stop at the member / total byte limits and at extreme compression ratios (zip bombs),
* open every image with Pillow (restricted to ordinary formats, ``MAX_IMAGE_PIXELS`` set from the
  limits), ``verify()`` a PNG's checksums, then ``load()`` (decode) every image to catch truncated or
  damaged files - JPEGs at a DCT-scaled size, which reads every byte of the stream just the same,
* store each accepted image under a server-made name (``<sha256 prefix>.<real format extension>``).

Fatal problems (not a ZIP, too many members, a bomb) raise :class:`gpu_worker.UserFacingError`;
problems with one member are returned as :class:`SkippedMember` entries with a reason.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import posixpath
import stat
import struct
import warnings
import zipfile
import zlib
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

# the plugins of the allowed formats (imported names unused) are registered at import: Image.open(formats=
# ALLOWED_FORMATS) then never runs Image.init(), which imports every Pillow plugin (~30 ms of CPU in each new
# process, e.g. each pool process, which the forkserver forks from a process that has imported this module)
from PIL import (  # noqa: F401
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageOps,
    JpegImagePlugin,
    MpoImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

from gpu_worker import Cancelled, UserFacingError
from gpu_worker.images import exif_orientation, upright_in_place

__all__ = [
    "Limits",
    "ImageEntry",
    "SkippedMember",
    "ZipScan",
    "IMAGE_EXTENSIONS",
    "scan_zip",
    "check_member_name",
    "check_image_file",
    "make_thumbnail",
    "THUMB_SIDE",
    "accept_image_file",
]

CHUNK = 1 << 16
#: thumbnails made at cleaning for list pages (WebP, longest side)
THUMB_SIDE = 256
#: images per task sent to the checking pool
POOL_BATCH = 16
#: below this many members a pool costs more to start than it saves
POOL_MIN_MEMBERS = 64
#: compression ratios are only judged once this many bytes came out (tiny files compress oddly well)
RATIO_MIN_BYTES = 1 << 20
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
#: Pillow plugins we let parse uploads (no EPS/PSD/... parsers on hostile bytes)
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")  # JPEG also yields MPO
FORMAT_EXTENSION = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "GIF": ".gif", "BMP": ".bmp",
                    "WEBP": ".webp", "TIFF": ".tif"}
_ZIP_OPEN_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
                    struct.error, NotImplementedError, IndexError, KeyError, OverflowError,
                    UnicodeDecodeError)
_MEMBER_READ_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, struct.error,
                       NotImplementedError, RuntimeError, IndexError, KeyError, OverflowError,
                       UnicodeDecodeError)


@dataclass
class Limits:
    """Caps applied to one upload. ``max_ratio`` is uncompressed/compressed bytes of one member."""

    max_members: int = 100_000
    max_total_bytes: int = 10 * 1024**3
    max_member_bytes: int = 64 * 1024**2
    max_ratio: float = 100.0
    max_image_pixels: int = 50_000_000
    max_side: int = 1920


@dataclass
class ImageEntry:
    original_name: str   # path inside the ZIP (normalised to "/" separators)
    stored_name: str     # server-made file name inside the images folder
    width: int
    height: int
    format: str          # Pillow format name ("PNG", "JPEG", ...)
    sha256: str
    size_bytes: int
    thumbnail: str = ""  # file name in the thumbnails folder ("" when none was made)


@dataclass
class SkippedMember:
    name: str
    reason_code: str
    reason: str
    width: Optional[int] = None
    height: Optional[int] = None


@dataclass
class ZipScan:
    images: list = field(default_factory=list)     # [ImageEntry]
    skipped: list = field(default_factory=list)    # [SkippedMember] - looked like images or hostile
    ignored: list = field(default_factory=list)    # [SkippedMember] - not images (README, CSV, .DS_Store)
    members_total: int = 0
    bytes_total: int = 0

    @property
    def oversized(self) -> list:
        return [s for s in self.skipped if s.reason_code == "image_oversized"]


def check_member_name(name: str) -> tuple[Optional[str], str]:
    """Return (reason_code, message) when a member path is unsafe, else (None, normalised name)."""
    norm = name.replace("\\", "/")
    if "\x00" in norm:
        return "unsafe_path", f"'{name}' has a NUL character in its name"
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or norm.startswith("//"):
        return "absolute_path", f"'{name}' is an absolute path; only relative paths are accepted"
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return "path_traversal", f"'{name}' points outside the archive ('..' in its path)"
    return None, "/".join(parts)


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = (info.external_attr >> 16) & 0xFFFF
    return stat.S_ISLNK(mode)


def _is_ignored_name(norm: str) -> bool:
    parts = norm.split("/")
    return parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts)


def check_image_file(path: Path, limits: Limits, thumb_path=None) -> tuple[Optional[str], str, Optional[tuple]]:
    """Open a file with Pillow like an attacker sent it.

    Returns (None, format, (width, height)) for a good image, else (reason_code, message, size-or-None).
    With ``thumb_path`` a good image also gets its WebP thumbnail there, made from the decoded pixels.
    """
    return _inspect_image(path, limits, thumb_path)[:3]


def _inspect_image(path: Path, limits: Limits, thumb_path=None) -> tuple:
    """:func:`check_image_file` plus the EXIF orientation (1 when upright), from one open of the file.

    PNG is ``verify()``-ed (its chunk CRCs) before the decode; no other Pillow plugin checks anything in
    ``verify()``, so the other formats are decoded straight away. A JPEG is decoded with DCT scaling
    (``draft``, 1/2 .. 1/8 of the size): libjpeg still reads and entropy-decodes every byte of every
    scan, so a truncated or broken stream fails exactly as in a full-size decode, but the inverse DCT,
    the colour conversion and the thumbnail's resize work on far fewer pixels."""
    old_max = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limits.max_image_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                return _decode_checked(path, limits, thumb_path)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                return ("image_too_many_pixels",
                        f"is too large to decode safely ({exc}); the limit is "
                        f"{limits.max_image_pixels:,} pixels", None, 1)
            except Image.UnidentifiedImageError:
                return "not_an_image", "is not an image Pillow can read (PNG, JPEG, GIF, BMP, WEBP, TIFF)", None, 1
            except MemoryError:
                return "image_too_many_pixels", "needs too much memory to decode", None, 1
            except Exception as exc:  # noqa: BLE001 - Pillow plugins raise many types on hostile bytes
                text = str(exc) or type(exc).__name__
                if "truncated" in text.lower():
                    return "image_truncated", f"is truncated or damaged ({text})", None, 1
                return "image_unreadable", f"could not be decoded ({text})", None, 1
    finally:
        Image.MAX_IMAGE_PIXELS = old_max


def _decode_checked(path: Path, limits: Limits, thumb_path) -> tuple:
    im = Image.open(path, formats=ALLOWED_FORMATS)
    try:
        fmt = im.format
        size = im.size
        if size[0] <= 0 or size[1] <= 0:
            return "image_unreadable", f"has an impossible size {size[0]}x{size[1]}", None, 1
        if size[0] * size[1] > limits.max_image_pixels:
            return ("image_too_many_pixels",
                    f"claims {size[0]}x{size[1]} pixels, more than the limit of "
                    f"{limits.max_image_pixels:,} pixels", size, 1)
        if fmt == "PNG":
            im.verify()  # closes the file: the decode needs a fresh open
            im.close()
            im = Image.open(path, formats=ALLOWED_FORMATS)
        thumb = thumb_path is not None and size[0] <= limits.max_side and size[1] <= limits.max_side
        if fmt in ("JPEG", "MPO"):
            # decode at the smallest DCT scale that still covers the thumbnail (1/8 without one)
            im.draft(None, _thumb_size(size) if thumb else (1, 1))
        im.load()
        orientation = exif_orientation(im)
        if thumb:
            if orientation != 1:
                ImageOps.exif_transpose(im, in_place=True)  # the thumbnail shows the upright photo
            make_thumbnail(im, thumb_path)
        return None, fmt, size, orientation
    finally:
        im.close()


def _thumb_size(size: tuple, side: int = THUMB_SIDE) -> tuple:
    """The size :func:`make_thumbnail` gives an image of ``size`` (aspect kept, longest side <= ``side``)."""
    w, h = size
    scale = min(side / w, side / h, 1.0)
    return max(round(w * scale), 1), max(round(h * scale), 1)


def accept_image_file(path: Path, limits: Limits, thumb_path=None) -> tuple[Optional[str], str, Optional[tuple]]:
    """:func:`check_image_file`, then the EXIF orientation applied to the file (the one place an uploaded
    image is turned upright, see :mod:`gpu_worker.images`); the size returned is the upright one."""
    code, fmt, size, orientation = _inspect_image(path, limits, thumb_path=thumb_path)
    if code is not None or orientation == 1:
        return code, fmt, size
    try:
        return None, fmt, upright_in_place(path, fmt)
    except OSError as exc:
        if exc.errno is not None:  # the file system (a full disk) fails the job as before
            raise
        return "image_unreadable", f"could not be turned upright ({exc})", None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on hostile EXIF
        return "image_unreadable", f"could not be turned upright ({exc})", None


def _fatal_bomb(zip_label: str, member: str, what: str) -> UserFacingError:
    return UserFacingError(
        f"The images ZIP '{zip_label}' was rejected: {what} (member '{member}'). This looks like a "
        f"'zip bomb' or an archive far larger than allowed. Remove that file, or split the images into "
        f"smaller ZIP files, and upload again.")


def _check_declared(infos, limits: Limits, label: str) -> None:
    """Cheap first line of defence from the central directory (the copy loop re-checks real bytes)."""
    if len(infos) > limits.max_members:
        raise UserFacingError(
            f"The images ZIP '{label}' has {len(infos):,} entries; the limit is "
            f"{limits.max_members:,}. Split the images into several datasets or remove unused files.")
    declared = sum(max(i.file_size, 0) for i in infos)
    if declared > limits.max_total_bytes:
        raise UserFacingError(
            f"The images ZIP '{label}' would unpack to {declared:,} bytes; the limit is "
            f"{limits.max_total_bytes:,} bytes. Upload fewer or smaller images.")


def _declared_ratio_ok(info: zipfile.ZipInfo, limits: Limits) -> bool:
    return not (info.file_size >= RATIO_MIN_BYTES and info.compress_size > 0
                and info.file_size / info.compress_size > limits.max_ratio)


class _ScanState:
    """What one scan carries from member to member."""

    def __init__(self, out_dir: Path, limits: Limits, label: str, thumbs_dir: Optional[Path]):
        self.out_dir, self.limits, self.label, self.thumbs_dir = out_dir, limits, label, thumbs_dir
        self.seen_names: set = set()
        self.by_hash: dict = {}   # sha256 -> (stored name, thumbnail name)
        self.total = 0            # bytes unpacked so far (real bytes, not the headers' claims)


@dataclass
class _Extracted:
    """A member copied to a temporary file, waiting for its image check."""

    norm: str
    ext: str
    tmp: Path
    sha: str
    written: int

    @property
    def thumb_tmp(self) -> Path:
        return self.tmp.with_name(self.tmp.name + ".thumb")


def scan_zip(zip_path, out_dir, limits: Optional[Limits] = None, *,
             report: Optional[Callable] = None, should_cancel: Optional[Callable] = None,
             display_name: Optional[str] = None, workers: int = 1,
             thumbs_dir=None) -> ZipScan:
    """Check every member of ``zip_path`` and copy the good images to ``out_dir`` (created).

    ``report(progress, stage)`` gets 0..1 over the members; ``should_cancel()`` is polled every few
    members and raises :class:`gpu_worker.Cancelled`. With ``workers`` > 1 the image checks (the
    expensive full decode) run in a pool of that many processes while this process keeps unpacking;
    results are taken in member order, so the outcome is the same as with one process. With
    ``thumbs_dir`` every accepted image also gets a ``THUMB_SIDE`` px WebP thumbnail there.
    """
    limits = limits or Limits()
    label = display_name or os.path.basename(str(zip_path))
    out_dir = Path(out_dir).resolve()  # the pool's processes may have another working directory
    out_dir.mkdir(parents=True, exist_ok=True)
    if thumbs_dir is not None:
        thumbs_dir = Path(thumbs_dir).resolve()
        thumbs_dir.mkdir(parents=True, exist_ok=True)
    zf = _open_zip(zip_path, label)
    scan = ZipScan()
    state = _ScanState(out_dir, limits, label, thumbs_dir)
    infos = zf.infolist()
    if len(infos) < POOL_MIN_MEMBERS:
        workers = 1
    with zf, _Checker(workers, limits, thumbs_dir is not None) as checker:
        scan.members_total = len(infos)
        _check_declared(infos, limits, label)
        for idx, info in enumerate(infos):
            if idx % 50 == 0:
                _poll(idx, len(infos), report, should_cancel)
            extracted = _take_member(zf, info, state, scan)
            if extracted is not None:
                for done in checker.submit(extracted):
                    _accept(*done, state, scan)
        for done in checker.drain():
            _accept(*done, state, scan)
        scan.bytes_total = state.total
        if report is not None:
            report(1.0, f"Checked {len(infos):,} files")
    return scan


def _open_zip(zip_path, label) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(zip_path)
    except _ZIP_OPEN_ERRORS as exc:
        raise UserFacingError(
            f"The images file '{label}' is not a readable ZIP archive ({exc}). Create the archive again "
            f"with 'Compress' / 'Send to > Compressed folder' and upload the .zip file.") from exc


def _poll(idx: int, n: int, report, should_cancel) -> None:
    if should_cancel is not None and should_cancel():
        raise Cancelled()
    if report is not None:
        report(idx / max(n, 1), f"Checking images: {idx:,} of {n:,} files")


def _take_member(zf, info, state: _ScanState, scan: ZipScan) -> Optional[_Extracted]:
    """Judge one member by its name and header, then unpack it; None when it was recorded as skipped."""
    norm = _admit_member(info, state, scan)
    if norm is None:
        return None
    ext = posixpath.splitext(norm)[1].lower()
    extracted, problem = _unpack(zf, info, norm, ext, state)
    if problem is not None:
        scan.skipped.append(problem)
        return None
    return extracted


def _admit_member(info, state: _ScanState, scan: ZipScan) -> Optional[str]:
    """The name and header rules, in order; returns the normalised name of a member worth unpacking."""
    name = info.filename
    if name.endswith("/") or name.endswith("\\"):
        return None  # directory entry
    code, norm = check_member_name(name)
    if code is not None:
        scan.skipped.append(SkippedMember(name, code, norm))
        return None
    if not norm:
        return None
    rejection = _header_rejection(info, norm, state)
    if rejection is not None:
        bucket, member = rejection
        (scan.ignored if bucket == "ignored" else scan.skipped).append(member)
        return None
    state.seen_names.add(norm)
    if not _declared_ratio_ok(info, state.limits):
        raise _fatal_bomb(state.label, norm, f"it compresses {info.file_size / info.compress_size:,.0f} to 1, "
                                             f"more than the allowed {state.limits.max_ratio:,.0f} to 1")
    return norm


def _header_rejection(info, norm: str, state: _ScanState):
    """("ignored" | "skipped", SkippedMember) for a member refused before unpacking, else None."""
    ext = posixpath.splitext(norm)[1].lower()
    if _is_ignored_name(norm):
        return "ignored", SkippedMember(norm, "hidden_file", "system or hidden file")
    if _is_symlink(info):
        return "skipped", SkippedMember(norm, "symlink", f"'{norm}' is a symbolic link; links are not accepted")
    if info.flag_bits & 0x1:
        return "skipped", SkippedMember(norm, "encrypted",
                                        f"'{norm}' is password-protected; upload a ZIP without a password")
    if ext and ext not in IMAGE_EXTENSIONS:
        return "ignored", SkippedMember(norm, "not_an_image_file", f"'{norm}' is not an image file")
    if norm in state.seen_names:
        return "skipped", SkippedMember(norm, "duplicate_member",
                                        f"'{norm}' appears twice in the ZIP; only the first copy is used")
    if info.file_size > state.limits.max_member_bytes:
        return "skipped", SkippedMember(
            norm, "file_too_large",
            f"'{norm}' is {info.file_size:,} bytes; the limit per image is {state.limits.max_member_bytes:,}")
    return None


def _unpack(zf, info, norm: str, ext: str, state: _ScanState):
    """Copy one member to a temporary file counting the real bytes; (extracted, None) or (None, problem)."""
    limits = state.limits
    tmp = state.out_dir / f".incoming-{os.getpid()}-{len(state.seen_names)}"
    digest = hashlib.sha256()
    written = 0
    compressed = max(info.compress_size, 1)
    problem = None
    try:
        with zf.open(info) as src, open(tmp, "wb") as dst:
            while chunk := src.read(CHUNK):
                written += len(chunk)
                state.total += len(chunk)
                if state.total > limits.max_total_bytes:
                    raise _fatal_bomb(state.label, norm, f"the archive unpacks to more than "
                                                         f"{limits.max_total_bytes:,} bytes")
                if written >= RATIO_MIN_BYTES and written / compressed > limits.max_ratio:
                    raise _fatal_bomb(state.label, norm, f"it compresses more than {limits.max_ratio:,.0f} to 1")
                if written > limits.max_member_bytes:
                    problem = SkippedMember(norm, "file_too_large",
                                            f"'{norm}' unpacks to more than {limits.max_member_bytes:,} "
                                            f"bytes, the limit per image")
                    break
                digest.update(chunk)
                dst.write(chunk)
    except _MEMBER_READ_ERRORS as exc:
        problem = SkippedMember(norm, "corrupt_member", f"'{norm}' could not be unpacked ({exc})")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if problem is None and written == 0:
        problem = SkippedMember(norm, "empty_file", f"'{norm}' is an empty file")
    if problem is not None:
        tmp.unlink(missing_ok=True)
        return None, problem
    return _Extracted(norm, ext, tmp, digest.hexdigest(), written), None


def _accept(ex: _Extracted, checked: tuple, state: _ScanState, scan: ZipScan) -> None:
    """Record the image check of one member: stored under its content hash, or skipped with the reason."""
    code, fmt_or_msg, size, has_thumb = checked
    if code is not None:
        _discard(ex)
        if code == "not_an_image" and not ex.ext:
            scan.ignored.append(SkippedMember(ex.norm, "not_an_image_file", f"'{ex.norm}' is not an image file"))
        else:
            scan.skipped.append(SkippedMember(ex.norm, code, f"'{ex.norm}' {fmt_or_msg}",
                                              *(size if size else (None, None))))
        return
    width, height = size
    limits = state.limits
    if width > limits.max_side or height > limits.max_side:
        _discard(ex)
        scan.skipped.append(SkippedMember(
            ex.norm, "image_oversized",
            f"'{ex.norm}' is {width}x{height} pixels; images may be at most {limits.max_side} pixels wide "
            f"and tall. Resize it and upload again", width, height))
        return
    known = state.by_hash.get(ex.sha)
    if known is None:
        stored = ex.sha[:20] + FORMAT_EXTENSION.get(fmt_or_msg, ".img")
        os.replace(ex.tmp, state.out_dir / stored)
        thumb = ""
        if has_thumb and state.thumbs_dir is not None:
            thumb = ex.sha[:20] + ".webp"
            os.replace(ex.thumb_tmp, state.thumbs_dir / thumb)
        known = state.by_hash[ex.sha] = (stored, thumb)
    else:
        _discard(ex)
    scan.images.append(ImageEntry(ex.norm, known[0], width, height, fmt_or_msg, ex.sha, ex.written,
                                  thumbnail=known[1]))


def _discard(ex: _Extracted) -> None:
    ex.tmp.unlink(missing_ok=True)
    ex.thumb_tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- image checks, in this process or a pool
def make_thumbnail(im, dest, side: int = THUMB_SIDE) -> bool:
    """Write a WebP thumbnail of a loaded image (at most ``side`` px); False when the mode can't be shown.

    Shrinks ``im`` in place (no copy of the full pixels): integer reduction first, then bilinear."""
    try:
        im.thumbnail((side, side), Image.BILINEAR, reducing_gap=1.0)
        thumb = im
        has_alpha = thumb.mode in ("RGBA", "LA", "PA") or (thumb.mode == "P" and "transparency" in thumb.info)
        thumb = thumb.convert("RGBA" if has_alpha else "RGB")
        thumb.save(dest, "WEBP", quality=80, method=0)
        return True
    except Exception:  # noqa: BLE001 - a thumbnail is a convenience; the image itself was accepted
        if isinstance(dest, (str, Path)):
            Path(dest).unlink(missing_ok=True)
        return False


def _check_batch(batch: list, limits: Limits) -> list:
    """Check a batch of (path, thumbnail path or None); one result tuple per entry (runs in the pool)."""
    out = []
    for path, thumb in batch:
        code, fmt_or_msg, size = accept_image_file(Path(path), limits, thumb_path=thumb)
        out.append((code, fmt_or_msg, size, code is None and thumb is not None and os.path.exists(thumb)))
    return out


class _Checker:
    """Runs image checks in order: inline with one worker, else batched over a process pool.

    ``submit`` returns the (extracted, result) pairs that are finished at the head of the line, so
    callers see members in ZIP order whatever the pool does; at most ``2 * workers`` batches wait."""

    def __init__(self, workers: int, limits: Limits, thumbs: bool):
        self.workers = max(int(workers or 1), 1)
        self.limits, self.thumbs = limits, thumbs
        self._pool = None
        self._batch: list = []
        self._line: deque = deque()   # (list of _Extracted, future)

    def __enter__(self):
        if self.workers > 1:
            ctx = multiprocessing.get_context("forkserver")  # no fork of a process with threads
            ctx.set_forkserver_preload(["gpu_worker.safezip"])
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx)
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for ex in self._batch:
            _discard(ex)
        for batch, _future in self._line:
            for ex in batch:
                _discard(ex)
        return False

    def _job(self, batch):
        return [(str(ex.tmp), str(ex.thumb_tmp) if self.thumbs else None) for ex in batch]

    def submit(self, ex: _Extracted):
        if self._pool is None:
            return [(ex, _check_batch(self._job([ex]), self.limits)[0])]
        self._batch.append(ex)
        if len(self._batch) >= POOL_BATCH:
            self._line.append((self._batch, self._pool.submit(_check_batch, self._job(self._batch), self.limits)))
            self._batch = []
        done = []
        while self._line and (len(self._line) > 2 * self.workers or self._line[0][1].done()):
            done.extend(self._pop())
        return done

    def _pop(self):
        batch, future = self._line.popleft()
        try:
            results = future.result()
        except BaseException:
            for ex in batch:
                _discard(ex)
            raise
        return list(zip(batch, results))

    def drain(self):
        if self._batch and self._pool is not None:
            self._line.append((self._batch, self._pool.submit(_check_batch, self._job(self._batch), self.limits)))
            self._batch = []
        while self._line:
            yield from self._pop()
