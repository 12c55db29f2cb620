"""Open an uploaded images ZIP without trusting anything in it.

Never ``extractall``: we walk ``infolist()`` ourselves and, member by member,

* refuse absolute paths, ``..`` components, symbolic links and encrypted members (recorded as skipped),
* ignore directories, ``__MACOSX/`` resource forks and dotfiles (``.DS_Store``),
* count the bytes WHILE copying in chunks (the sizes in the headers are whatever the sender wrote),
  and stop at the member / total byte limits and at extreme compression ratios (zip bombs),
* open every image with Pillow (restricted to ordinary formats, ``MAX_IMAGE_PIXELS`` set from the
  limits), ``verify()`` it, then re-open and ``load()`` it to catch truncated files,
* store each accepted image under a server-made name (``<sha256 prefix>.<real format extension>``).

Fatal problems (not a ZIP, too many members, a bomb) raise :class:`gpu_worker.UserFacingError`;
problems with one member are returned as :class:`SkippedMember` entries with a reason.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from PIL import Image

from gpu_worker import Cancelled, UserFacingError
from gpu_worker.images import upright_in_place

__all__ = [
    "Limits",
    "ImageEntry",
    "SkippedMember",
    "ZipScan",
    "IMAGE_EXTENSIONS",
    "scan_zip",
    "check_member_name",
    "check_image_file",
    "accept_image_file",
]

CHUNK = 1 << 16
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


def check_image_file(path: Path, limits: Limits) -> tuple[Optional[str], str, Optional[tuple]]:
    """Open a file with Pillow like an attacker sent it.

    Returns (None, format, (width, height)) for a good image, else (reason_code, message, size-or-None).
    """
    old_max = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limits.max_image_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                with Image.open(path, formats=ALLOWED_FORMATS) as im:
                    fmt = im.format
                    size = im.size
                    if size[0] <= 0 or size[1] <= 0:
                        return "image_unreadable", f"has an impossible size {size[0]}x{size[1]}", None
                    if size[0] * size[1] > limits.max_image_pixels:
                        return ("image_too_many_pixels",
                                f"claims {size[0]}x{size[1]} pixels, more than the limit of "
                                f"{limits.max_image_pixels:,} pixels", size)
                    im.verify()
                with Image.open(path, formats=ALLOWED_FORMATS) as im:
                    im.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                return ("image_too_many_pixels",
                        f"is too large to decode safely ({exc}); the limit is "
                        f"{limits.max_image_pixels:,} pixels", None)
            except Image.UnidentifiedImageError:
                return "not_an_image", "is not an image Pillow can read (PNG, JPEG, GIF, BMP, WEBP, TIFF)", None
            except MemoryError:
                return "image_too_many_pixels", "needs too much memory to decode", None
            except Exception as exc:  # noqa: BLE001 - Pillow plugins raise many types on hostile bytes
                text = str(exc) or type(exc).__name__
                if "truncated" in text.lower():
                    return "image_truncated", f"is truncated or damaged ({text})", None
                return "image_unreadable", f"could not be decoded ({text})", None
    finally:
        Image.MAX_IMAGE_PIXELS = old_max
    return None, fmt, size


def accept_image_file(path: Path, limits: Limits) -> tuple[Optional[str], str, Optional[tuple]]:
    """:func:`check_image_file`, then the EXIF orientation applied to the file (the one place an uploaded
    image is turned upright, see :mod:`gpu_worker.images`); the size returned is the upright one."""
    code, fmt, size = check_image_file(path, limits)
    if code is not None:
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


def scan_zip(zip_path, out_dir, limits: Optional[Limits] = None, *,
             report: Optional[Callable] = None, should_cancel: Optional[Callable] = None,
             display_name: Optional[str] = None) -> ZipScan:
    """Check every member of ``zip_path`` and copy the good images to ``out_dir`` (created).

    ``report(progress, stage)`` gets 0..1 over the members; ``should_cancel()`` is polled every few
    members and raises :class:`gpu_worker.Cancelled`.
    """
    limits = limits or Limits()
    label = display_name or os.path.basename(str(zip_path))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(zip_path)
    except _ZIP_OPEN_ERRORS as exc:
        raise UserFacingError(
            f"The images file '{label}' is not a readable ZIP archive ({exc}). Create the archive again "
            f"with 'Compress' / 'Send to > Compressed folder' and upload the .zip file.") from exc
    scan = ZipScan()
    with zf:
        try:
            infos = zf.infolist()
        except _ZIP_OPEN_ERRORS as exc:  # pragma: no cover - infolist is computed at open time
            raise UserFacingError(f"The images file '{label}' has a damaged table of contents ({exc}).")
        scan.members_total = len(infos)
        _check_declared(infos, limits, label)
        seen_names: set = set()
        by_hash: dict = {}
        total = 0
        n = max(len(infos), 1)
        for idx, info in enumerate(infos):
            if idx % 50 == 0:
                if should_cancel is not None and should_cancel():
                    raise Cancelled()
                if report is not None:
                    report(idx / n, f"Checking images: {idx:,} of {len(infos):,} files")
            total = _scan_member(zf, info, out_dir, limits, label, scan, seen_names, by_hash, total)
        scan.bytes_total = total
        if report is not None:
            report(1.0, f"Checked {len(infos):,} files")
    return scan


def _scan_member(zf, info, out_dir, limits, label, scan, seen_names, by_hash, total) -> int:  # noqa: C901 - split into steps under issue 15
    name = info.filename
    if name.endswith("/") or name.endswith("\\"):
        return total  # directory entry
    code, norm = check_member_name(name)
    if code is not None:
        scan.skipped.append(SkippedMember(name, code, norm))
        return total
    if not norm:
        return total
    if _is_ignored_name(norm):
        scan.ignored.append(SkippedMember(norm, "hidden_file", "system or hidden file"))
        return total
    if _is_symlink(info):
        scan.skipped.append(SkippedMember(norm, "symlink", f"'{norm}' is a symbolic link; links are not accepted"))
        return total
    if info.flag_bits & 0x1:
        scan.skipped.append(SkippedMember(
            norm, "encrypted", f"'{norm}' is password-protected; upload a ZIP without a password"))
        return total
    ext = posixpath.splitext(norm)[1].lower()
    if ext and ext not in IMAGE_EXTENSIONS:
        scan.ignored.append(SkippedMember(norm, "not_an_image_file", f"'{norm}' is not an image file"))
        return total
    if norm in seen_names:
        scan.skipped.append(SkippedMember(
            norm, "duplicate_member", f"'{norm}' appears twice in the ZIP; only the first copy is used"))
        return total
    seen_names.add(norm)
    if info.file_size > limits.max_member_bytes:
        scan.skipped.append(SkippedMember(
            norm, "file_too_large",
            f"'{norm}' is {info.file_size:,} bytes; the limit per image is {limits.max_member_bytes:,}"))
        return total
    if not _declared_ratio_ok(info, limits):
        raise _fatal_bomb(label, norm, f"it compresses {info.file_size / info.compress_size:,.0f} to 1, "
                                       f"more than the allowed {limits.max_ratio:,.0f} to 1")

    tmp = out_dir / f".incoming-{os.getpid()}-{len(seen_names)}"
    digest = hashlib.sha256()
    written = 0
    compressed = max(info.compress_size, 1)
    problem = None
    try:
        with zf.open(info) as src, open(tmp, "wb") as dst:
            while True:
                chunk = src.read(CHUNK)
                if not chunk:
                    break
                written += len(chunk)
                total += len(chunk)
                if total > limits.max_total_bytes:
                    raise _fatal_bomb(label, norm, f"the archive unpacks to more than "
                                                   f"{limits.max_total_bytes:,} bytes")
                if written >= RATIO_MIN_BYTES and written / compressed > limits.max_ratio:
                    raise _fatal_bomb(label, norm, f"it compresses more than {limits.max_ratio:,.0f} to 1")
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
        scan.skipped.append(problem)
        return total

    code, fmt_or_msg, size = accept_image_file(tmp, limits)
    if code is not None:
        tmp.unlink(missing_ok=True)
        if code == "not_an_image" and not ext:
            scan.ignored.append(SkippedMember(norm, "not_an_image_file", f"'{norm}' is not an image file"))
        else:
            scan.skipped.append(SkippedMember(norm, code, f"'{norm}' {fmt_or_msg}",
                                              *(size if size else (None, None))))
        return total
    width, height = size
    if width > limits.max_side or height > limits.max_side:
        tmp.unlink(missing_ok=True)
        scan.skipped.append(SkippedMember(
            norm, "image_oversized",
            f"'{norm}' is {width}x{height} pixels; images may be at most {limits.max_side} pixels wide "
            f"and tall. Resize it and upload again", width, height))
        return total
    sha = digest.hexdigest()
    stored = by_hash.get(sha)
    if stored is None:
        stored = sha[:20] + FORMAT_EXTENSION.get(fmt_or_msg, ".img")
        os.replace(tmp, out_dir / stored)
        by_hash[sha] = stored
    else:
        tmp.unlink(missing_ok=True)
    scan.images.append(ImageEntry(norm, stored, width, height, fmt_or_msg, sha, written))
    return total
