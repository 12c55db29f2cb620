"""Downloads: predictions CSV (spreadsheet-safe) and ZIPs of annotated images named by their question.

ZIP member names come from user text, so they are made file-system safe on every OS: no path
separators or ``..``, no control characters, no characters Windows forbids, no reserved device names
(CON, NUL, COM1, ...), a bounded length (in UTF-8 bytes), never empty, and unique (case-insensitively,
as on Windows and macOS) with ``-2``, ``-3`` suffixes.
"""
from __future__ import annotations

import io
import pickle
import re
import shutil
import tempfile
import unicodedata
import zipfile
from pathlib import Path

from gpu_worker.tabular import csv_row_writer, write_csv
from piggyback.files import open_stream

MAX_STEM_BYTES = 100
_FORBIDDEN = re.compile(r'[<>:"/\\|?*]')
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10)),
             "conin$", "conout$"}
CSV_HEADER = ["row", "image", "question", "answer", "confidence", "top_5", "expected", "vqa_score",
              "overlay_file", "model"]


def safe_stem(text: str, fallback: str = "question", max_bytes: int = MAX_STEM_BYTES) -> str:
    """A file name stem made from ``text`` that is safe on Windows, macOS and Linux."""
    text = unicodedata.normalize("NFC", str(text or ""))
    # drop control / format / unassigned / surrogate characters (category C*), keep letters, emoji, ...
    text = "".join(" " if ch in "\t\n\r" else ch for ch in text if ch in "\t\n\r" or unicodedata.category(ch)[0] != "C")
    text = _FORBIDDEN.sub("_", text)
    text = re.sub(r"\.{2,}", ".", text)          # no ".." anywhere
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"_{2,}", "_", text)
    text = text.strip(" ._-")
    # bounded length in bytes without cutting a character in half
    raw = text.encode("utf-8")
    if len(raw) > max_bytes:
        text = raw[:max_bytes].decode("utf-8", errors="ignore").rstrip(" ._-")
    if not text:
        text = fallback
    if text.split(".")[0].strip().lower() in _RESERVED:
        text = f"_{text}"
    return text


class UniqueNamer:
    """Names texts one at a time, exactly like :func:`unique_names` over the same texts in the same order, so an
    export of any length never needs its questions in memory at once (only the lowercase names given out)."""

    def __init__(self, ext: str = ".png", fallback: str = "question"):
        self.ext, self.fallback = ext, fallback
        self.used: set[str] = set()
        self._last_n: dict[str, int] = {}   # lowercase stem -> the last suffix it was given

    def __call__(self, text) -> str:
        stem = safe_stem(text, self.fallback)
        name, key = f"{stem}{self.ext}", stem.lower()
        if name.lower() in self.used:
            # every suffix below the last one this stem was given is taken (names are never released), so
            # probing resumes there: the same name as probing from -2, without going over them again
            n = self._last_n.get(key, 1)
            while True:
                n += 1
                name = f"{stem}-{n}{self.ext}"
                if name.lower() not in self.used:
                    break
            self._last_n[key] = n
        self.used.add(name.lower())
        return name


def unique_names(texts, ext: str = ".png", fallback: str = "question") -> list[str]:
    """One safe, unique file name per text, in order: "What colour", "What colour-2", ..."""
    namer = UniqueNamer(ext, fallback)
    return [namer(text) for text in texts]


def top_k_text(top_k: list) -> str:
    return " | ".join(f"{t.get('answer', '')} ({float(t.get('score', 0)):.3f})" for t in top_k or [])


def expected_text(answers: list) -> str:
    if not answers:
        return ""
    from collections import Counter

    return Counter(answers).most_common(1)[0][0]


def model_label(prediction) -> str:
    if prediction.training_run_id:
        return str(prediction.training_run)
    return str(prediction.model) if prediction.model_id else ""


def prediction_row(p, number: int, overlay_name: str = "") -> dict:
    """The CSV row of one prediction; ``number`` (1-based) stands in for a missing row number."""
    return {
        "row": p.row if p.row is not None else number,
        "image": p.image_original_name or Path(p.image).name,
        "question": p.question,
        "answer": p.answer,
        "confidence": round(float(p.confidence), 4),
        "top_5": top_k_text(p.top_k[:5]),
        "expected": expected_text(p.expected_answers),
        "vqa_score": "" if p.vqa_score is None else round(float(p.vqa_score), 4),
        "overlay_file": overlay_name,
        "model": model_label(p),
    }


def predictions_rows(predictions, overlay_names: list[str] | None = None):
    for i, p in enumerate(predictions):
        yield prediction_row(p, i + 1, overlay_names[i] if overlay_names else "")


def write_predictions_csv(fh, predictions, overlay_names=None) -> None:
    """Every cell goes through csv_safe (formulas neutralised)."""
    write_csv(fh, predictions_rows(predictions, overlay_names), CSV_HEADER)


def csv_bytes(predictions, overlay_names=None) -> bytes:
    buf = io.StringIO()
    write_predictions_csv(buf, predictions, overlay_names)
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def _text_out(binary):
    """A UTF-8 text view of a binary file for the csv module, starting with the BOM (as :func:`csv_bytes`)."""
    fh = io.TextIOWrapper(binary, encoding="utf-8", newline="", write_through=False)
    fh.write("\ufeff")
    return fh


class _SpooledZipDirectory:
    """Stands in for ``ZipFile.filelist`` while writing: each member's ZipInfo goes to a temporary file as soon as
    the member is written and is read back, one at a time, when the central directory is written at close.

    Python's ``zipfile`` keeps a ZipInfo (~370 bytes) for every member until the archive is closed: ~160 MB for
    the 440,000 overlays of a VQAv2-sized batch evaluation. Only ``append``, ``len`` and iteration are used in
    write mode (``ZipFile._write_end_record``, ``_writecheck``)."""

    def __init__(self):
        self._spool = tempfile.TemporaryFile()
        self._count = 0

    def append(self, info: zipfile.ZipInfo) -> None:
        pickle.dump(info, self._spool, protocol=pickle.HIGHEST_PROTOCOL)
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def __iter__(self):
        self._spool.seek(0)
        try:
            for _ in range(self._count):
                yield pickle.load(self._spool)
        finally:
            self._spool.seek(0, io.SEEK_END)

    def install(self, zf: zipfile.ZipFile) -> None:
        """Make ``zf``, just opened for writing, keep its directory here; names are not indexed either (they are
        already unique, see :class:`UniqueNamer`)."""
        zf.filelist, zf.NameToInfo = self, _NoNameIndex()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._spool.close()


class _NoNameIndex(dict):
    """Stands in for ``ZipFile.NameToInfo`` while writing: the index of every member's ZipInfo by name is not
    kept."""

    def __setitem__(self, key, value) -> None:
        pass


def _zip_add_stored(zf: zipfile.ZipFile, storage_name: str, arcname: str) -> bool:
    if not storage_name:
        return False
    try:
        src = open_stream(storage_name)  # from S3: one GET, streamed into the ZIP
    except FileNotFoundError:
        return False
    with src, zf.open(arcname, "w") as dst:
        while chunk := src.read(1024 * 1024):
            dst.write(chunk)
    return True


def write_annotated_zip(target, predictions, *, with_originals: bool = False, csv_name: str = "predictions.csv",
                        plain_csv=None) -> int:
    """Write a ZIP (path or binary file) of each prediction's overlay named by its question, plus the CSV.

    ``predictions`` is read once, in order, one at a time (a queryset's ``iterator()`` keeps any number of them
    out of memory): the CSV rows go to a temporary file first and become the ZIP's last member. ``plain_csv``, a
    binary file, also receives the same CSV without the overlay names (the evaluation's ``predictions.csv``).
    PNGs are already compressed, so members are stored. Returns the number of images written."""
    namer = UniqueNamer()
    written = 0
    with tempfile.TemporaryFile() as spool, _SpooledZipDirectory() as directory, \
            zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as zf:
        directory.install(zf)
        text = _text_out(spool)
        write_row = csv_row_writer(text, CSV_HEADER)
        plain_text = _text_out(plain_csv) if plain_csv is not None else None
        write_plain = csv_row_writer(plain_text, CSV_HEADER) if plain_text is not None else None
        for i, p in enumerate(predictions):
            name = namer(p.question)
            if _zip_add_stored(zf, p.overlay or p.image, f"annotated/{name}"):
                written += 1
            if with_originals:
                _zip_add_stored(zf, p.image, f"images/{name}")
            write_row(prediction_row(p, i + 1, f"annotated/{name}"))
            if write_plain is not None:
                write_plain(prediction_row(p, i + 1))
        text.flush()
        text.detach()   # the spool stays open
        if plain_text is not None:
            plain_text.flush()
            plain_text.detach()   # the caller's file stays open
        size = spool.tell()
        spool.seek(0)
        with zf.open(csv_name, "w", force_zip64=size > 2**31 - 1) as dst:
            shutil.copyfileobj(spool, dst, 1024 * 1024)
    return written
