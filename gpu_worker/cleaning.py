"""Turn an uploaded questions file + images ZIP into clean VQA items, keeping every removal with its reason.

Rules (in order, per row): unreadable row -> empty question -> no image name -> image not found /
ambiguous / dropped (unreadable, oversized, ...) -> exact duplicate of an earlier image+question pair.
Kept rows get ten answers (given answers repeated cyclically; ``[]`` when the row has none), normalised
like the official VQA evaluation, with the original text kept in ``original_answers``.

Memory: with a ``sink`` the kept items and dropped rows are handed over in lists of at most ``chunk_size``
and not kept, so a 440,000-question upload never holds them all; duplicate detection keeps an 8-byte hash
per kept (image, question) pair, not the strings (two different pairs share a hash with a chance of about
1e-8 at 440,000 questions).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import posixpath
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol

from gpu_worker import Cancelled, UserFacingError
from gpu_worker.safezip import ImageEntry, Limits, scan_zip
from gpu_worker.tabular import open_questions
from gpu_worker.vqa_normalize import answer_type, normalize_answer, question_type

__all__ = ["CleanResult", "ImageIndex", "ItemSink", "clean_dataset", "fill_answers", "NUM_ANSWERS", "ITEM_CHUNK"]

NUM_ANSWERS = 10
_ROW_CHUNK = 1000
_CACHE_MAX = 200_000
ITEM_CHUNK = 5000   # kept items / dropped rows handed to a sink at a time
_NUMERIC_NAME = re.compile(r"^(?:.*_)?0*(\d+)$")


@dataclass
class CleanResult:
    items: list = field(default_factory=list)
    dropped: list = field(default_factory=list)         # {"row", "image", "question", "reason_code", "reason"}
    dropped_images: list = field(default_factory=list)  # {"image", "reason_code", "reason"}
    counts: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    level: str = "success"                              # "success" | "warning"
    image_root: str = ""                                # folder the items' "image" paths are relative to
    source_format: str = ""                             # "csv" | "json" | "jsonl" | "vqa2"
    thumb_root: str = ""                                # folder of the items' "thumbnail" files ("" = none)
    # tallies over every kept item (also when a sink took the items themselves)
    rows_unlabelled: int = 0
    used_images: set = field(default_factory=set)       # the kept items' "image" values (stored names)
    used_thumbnails: set = field(default_factory=set)   # their non-empty "thumbnail" values

    def to_dict(self) -> dict:
        """Plain data (the sets as sorted lists)."""
        return {k: sorted(v) if isinstance(v, set) else v for k, v in dataclasses.asdict(self).items()}


class ItemSink(Protocol):
    """Receives the cleaning's output in chunks of at most ``chunk_size`` (in row order)."""

    def add_items(self, items: list) -> None: ...

    def add_dropped(self, dropped: list) -> None: ...


class _Collector:
    """Kept items and dropped rows: into ``result`` without a sink, else to the sink in chunks."""

    def __init__(self, result: "CleanResult", sink: Optional[ItemSink], chunk_size: int):
        self.result, self.sink, self.chunk_size = result, sink, max(1, int(chunk_size))
        self.items: list = result.items if sink is None else []
        self.dropped: list = result.dropped if sink is None else []
        self.kept = self.n_dropped = 0
        self.first_drop_reason = ""

    def add_item(self, item: dict) -> None:
        self.kept += 1
        res = self.result
        res.used_images.add(item["image"])
        if item["thumbnail"]:
            res.used_thumbnails.add(item["thumbnail"])
        if not item["answers"]:
            res.rows_unlabelled += 1
        self.items.append(item)
        if self.sink is not None and len(self.items) >= self.chunk_size:
            self.sink.add_items(self.items)
            self.items = []

    def add_dropped(self, entry: dict) -> None:
        if not self.n_dropped:
            self.first_drop_reason = entry["reason"]
        self.n_dropped += 1
        self.dropped.append(entry)
        if self.sink is not None and len(self.dropped) >= self.chunk_size:
            self.sink.add_dropped(self.dropped)
            self.dropped = []

    def flush(self) -> None:
        if self.sink is None:
            return
        if self.items:
            self.sink.add_items(self.items)
            self.items = []
        if self.dropped:
            self.sink.add_dropped(self.dropped)
            self.dropped = []


def _pair_key(image: str, question: str) -> bytes:
    """8 bytes standing for an (image, question) pair: the duplicate check keeps these, not the texts."""
    return hashlib.blake2b(f"{image}\0{question}".encode("utf-8", "surrogatepass"), digest_size=8).digest()


def fill_answers(answers: list, n: int = NUM_ANSWERS) -> list:
    """Repeat the given answers cyclically up to ``n`` (``[]`` stays ``[]``; more than n are cut)."""
    if not answers:
        return []
    return [answers[i % len(answers)] for i in range(n)]


def _cached(cache: dict, key, fn):
    value = cache.get(key)
    if value is None:
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        value = cache[key] = fn(key)
    return value


def _strip_ext(name: str) -> str:
    return posixpath.splitext(name)[0]


class ImageIndex:
    """Find a ZIP member from the name a user wrote: full path, without extension, basename, numeric id."""

    def __init__(self, images, skipped):
        self._levels = [dict() for _ in range(6)]
        for target in list(images) + list(skipped):
            name = (target.original_name if isinstance(target, ImageEntry) else target.name).replace("\\", "/")
            low = name.lower()
            base = posixpath.basename(low)
            keys = [name, low, _strip_ext(low), base, _strip_ext(base)]
            m = _NUMERIC_NAME.match(_strip_ext(base))
            keys.append(int(m.group(1)) if m else None)
            for level, key in zip(self._levels, keys):
                if key is not None and key != "":
                    level.setdefault(key, {})[name] = target

    def find(self, written: str, image_id: Optional[int] = None):
        """Return ("ok", target) | ("missing", None) | ("ambiguous", [names])."""
        name = written.replace("\\", "/").strip()
        while name.startswith("./"):
            name = name[2:]
        name = name.lstrip("/")
        low = name.lower()
        base = posixpath.basename(low)
        keys = [name, low, _strip_ext(low) if low == _strip_ext(low) else None, base,
                base if base == _strip_ext(base) else None, None]
        if image_id is not None:
            keys = [None] * 5 + [image_id]
        elif name.isdigit():
            keys[5] = int(name)
        for level, key in zip(self._levels, keys):
            if key is None or key == "":
                continue
            hits = level.get(key)
            if hits:
                if len(hits) == 1:
                    return "ok", next(iter(hits.values()))
                return "ambiguous", sorted(hits)
        return "missing", None


class _Progress:
    """``report`` clamped to 0..1 and the cancel check, for the steps below."""

    def __init__(self, report: Optional[Callable], should_cancel: Optional[Callable]):
        self._report, self.should_cancel = report, should_cancel

    def __call__(self, p: float, stage: str) -> None:
        if self._report is not None:
            self._report(max(0.0, min(1.0, p)), stage)

    def cancel_point(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled()


class _RowJudge:
    """Applies the row rules in order and turns a kept row into an item; keeps the tallies for the report."""

    def __init__(self, index: ImageIndex, zip_label: str, source_format: str):
        self.index, self.zip_label, self.source_format = index, zip_label, source_format
        self.seen: dict = {}          # 8-byte hash of (image, question) -> first row
        self.used: set = set()        # images some kept question uses (original names)
        self.reasons: Counter = Counter()
        self.truncated_answers = 0
        self._norm_cache: dict = {}   # answers repeat a lot: normalise each distinct text once
        self._type_cache: dict = {}

    def rejection(self, row):
        """(reason_code, reason, None) for a row that is dropped, else (None, None, image entry)."""
        if row.error:
            return "unreadable_row", f"Row {row.row} {row.error}.", None
        if not row.question.strip():
            return "empty_question", f"Row {row.row} has no question text.", None
        if not row.image.strip() and row.image_id is None:
            return "missing_image_name", f"Row {row.row} does not name an image.", None
        status, target = self.index.find(row.image, row.image_id)
        if status == "missing":
            return "image_not_found", f"Row {row.row}: no image '{row.image}' in the ZIP '{self.zip_label}'.", None
        if status == "ambiguous":
            shown = ", ".join(target[:3]) + (" ..." if len(target) > 3 else "")
            return ("image_ambiguous", f"Row {row.row}: '{row.image}' matches several files in the ZIP "
                                       f"({shown}); write the path inside the ZIP instead.", None)
        if not isinstance(target, ImageEntry):
            return target.reason_code, f"Row {row.row}: its image was removed: {target.reason}.", None
        key = _pair_key(target.original_name, " ".join(row.question.split()))
        if key in self.seen:
            return ("duplicate", f"Row {row.row} is a duplicate of row {self.seen[key]} (same image and question).",
                    None)
        self.seen[key] = row.row
        return None, None, target

    def item(self, row, target: ImageEntry) -> dict:
        question = " ".join(row.question.split())
        self.used.add(target.original_name)
        original = list(row.answers)
        if len(original) > NUM_ANSWERS:
            self.truncated_answers += 1
        filled = fill_answers(original[:NUM_ANSWERS])
        normalised = [_cached(self._norm_cache, a, normalize_answer) for a in filled]
        atype = row.answer_type or (_cached(self._type_cache, tuple(normalised), answer_type) if normalised else "")
        return {
            "id": row.question_id if self.source_format == "vqa2" and row.question_id else row.row,
            "image": target.stored_name,
            "thumbnail": target.thumbnail,
            "question": question,
            "answers": normalised,
            "answer_type": atype,
            "question_type": row.question_type or question_type(question),
            "row": row.row,
            "original_answers": original,
            "image_width": target.width,
            "image_height": target.height,
            "image_original_name": target.original_name,
        }


def clean_dataset(questions_path, images_zip_path, out_dir, annotations_path=None, *, max_side=1920,
                  limits: Optional[Limits] = None, report: Optional[Callable] = None,
                  should_cancel: Optional[Callable] = None, questions_name: Optional[str] = None,
                  images_name: Optional[str] = None, workers: int = 1, thumbnails: bool = False,
                  sink: Optional[ItemSink] = None, chunk_size: int = ITEM_CHUNK) -> CleanResult:
    """Check and clean one upload; accepted images go to ``out_dir/images/`` (thumbnails to ``out_dir/thumbs/``).

    ``questions_name`` / ``images_name`` are the names the user uploaded (for messages); ``workers`` is
    the number of processes that check images; ``thumbnails`` makes a small WebP per accepted image.
    With ``sink``, kept items and dropped rows go to it in chunks of at most ``chunk_size`` while the rows
    are read (the last ones just before the function returns; after an error the sink's caller must
    discard what it got) and ``result.items`` / ``result.dropped`` stay empty; the counts, warnings and ``used_images`` / ``rows_unlabelled`` tallies are the same either way."""
    limits = dataclasses.replace(limits or Limits(), max_side=max_side)
    out_dir = Path(out_dir)
    progress = _Progress(report, should_cancel)
    progress.cancel_point()
    # open the questions first: a wrong file fails fast, before unpacking thousands of images
    source = open_questions(questions_path, annotations_path, display_name=questions_name)
    zip_label = images_name or os.path.basename(str(images_zip_path))
    progress(0.0, "Checking the images ZIP")
    scan = scan_zip(images_zip_path, out_dir / "images", limits, should_cancel=should_cancel,
                    display_name=images_name, workers=workers,
                    thumbs_dir=(out_dir / "thumbs") if thumbnails else None,
                    report=lambda p, stage: progress(0.6 * p, stage))
    if not scan.images:
        raise _no_usable_images(scan, zip_label, max_side)

    result = CleanResult(image_root=str(out_dir / "images"), source_format=source.format,
                         thumb_root=str(out_dir / "thumbs") if thumbnails else "")
    result.dropped_images = [{"image": s.name, "reason_code": s.reason_code, "reason": s.reason}
                             for s in scan.skipped]
    judge = _RowJudge(ImageIndex(scan.images, scan.skipped), zip_label, source.format)
    out = _Collector(result, sink, chunk_size)
    progress(0.6, "Reading the questions")
    rows_in = _read_rows(source, judge, out, progress)
    result.warnings.extend(source.warnings)  # complete once the source was read to the end
    _require_usable_rows(rows_in, source, judge, out)
    result.warnings.extend(_scan_warnings(scan, judge, out, max_side))
    result.counts = _counts(rows_in, scan, judge, out)
    result.level = "warning" if (out.n_dropped or result.dropped_images or result.warnings) else "success"
    out.flush()
    progress(1.0, f"Ready: {len(scan.images):,} images, {out.kept:,} questions")
    return result


def _no_usable_images(scan, zip_label: str, max_side: int) -> UserFacingError:
    found = len(scan.images) + len(scan.skipped) + len(scan.ignored)
    reasons = Counter(s.reason_code for s in scan.skipped)
    detail = ", ".join(f"{n} {code.replace('_', ' ')}" for code, n in reasons.most_common(3))
    return UserFacingError(
        f"The ZIP '{zip_label}' contains no usable images ({found} files"
        f"{': ' + detail if detail else ''}). Put PNG or JPEG images of at most {max_side}x{max_side} "
        f"pixels in the ZIP and upload it again.")


def _read_rows(source, judge: _RowJudge, out: _Collector, progress: _Progress) -> int:
    """Every row either becomes an item or a dropped entry with its reason; returns the rows read."""
    rows_in = 0
    for row in source:
        rows_in += 1
        if rows_in % _ROW_CHUNK == 0:
            progress.cancel_point()
            frac = source.progress()
            if frac is None and source.total:
                frac = rows_in / source.total
            progress(0.6 + 0.4 * (frac or 0.0), f"Checking questions: {rows_in:,} rows read")
        code, reason, target = judge.rejection(row)
        if code is not None:
            judge.reasons[code] += 1
            out.add_dropped({"row": row.row, "image": row.image, "question": row.question,
                             "reason_code": code, "reason": reason})
            continue
        out.add_item(judge.item(row, target))
    return rows_in


def _require_usable_rows(rows_in: int, source, judge: _RowJudge, out: _Collector) -> None:
    if rows_in == 0:
        raise UserFacingError(f"The questions file '{source.label}' has a header but no question rows.")
    if not out.kept:
        top = ", ".join(f"{n:,} {code.replace('_', ' ')}" for code, n in judge.reasons.most_common(3))
        example = out.first_drop_reason
        raise UserFacingError(
            f"None of the {rows_in:,} questions could be used ({top}). For example: {example} "
            f"Check that the image column matches the file names in the ZIP.")


def _unused_images(scan, judge: _RowJudge) -> list:
    return [im.original_name for im in scan.images if im.original_name not in judge.used]


def _scan_warnings(scan, judge: _RowJudge, out: _Collector, max_side: int) -> list:
    warnings = []
    unused = _unused_images(scan, judge)
    if unused:
        warnings.append(f"{len(unused):,} images in the ZIP are not used by any question "
                        f"(e.g. {', '.join(unused[:3])}).")
    if scan.ignored:
        warnings.append(f"{len(scan.ignored):,} files in the ZIP are not images and were ignored "
                        f"(e.g. {', '.join(s.name for s in scan.ignored[:3])}).")
    if judge.truncated_answers:
        warnings.append(f"{judge.truncated_answers:,} rows had more than {NUM_ANSWERS} answers; only the first "
                        f"{NUM_ANSWERS} were kept.")
    if scan.oversized:
        warnings.append(f"{len(scan.oversized):,} images are larger than {max_side}x{max_side} pixels "
                        f"and were removed with the questions about them.")
    unlabelled = out.result.rows_unlabelled
    if 0 < unlabelled < out.kept:
        warnings.append(f"{unlabelled:,} kept questions have no answer (they can be used for "
                        f"prediction but not for training or scoring).")
    return warnings


def _counts(rows_in: int, scan, judge: _RowJudge, out: _Collector) -> dict:
    return {
        "rows_in": rows_in,
        "rows_kept": out.kept,
        "rows_dropped": out.n_dropped,
        "images_in": len(scan.images) + len(scan.skipped),
        "images_kept": len(scan.images),
        "images_dropped": len(scan.skipped),
        "images_oversized": len(scan.oversized),
        "images_unused": len(_unused_images(scan, judge)),
        "files_ignored": len(scan.ignored),
        "dropped_by_reason": dict(judge.reasons),
        "images_dropped_by_reason": dict(Counter(s.reason_code for s in scan.skipped)),
    }
