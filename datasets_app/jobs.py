"""The cleaning job: thin RQ entry point that runs gpu_worker.cleaning and writes the result back.

Nothing is written to the database until the very end, in one transaction, so a failed or cancelled
cleaning leaves no half-made items; stored images of a failed attempt are removed again.

Bounded memory: the cleaning hands its kept items and dropped rows over in chunks (``_Spool``), which go
to JSON-lines files in the job's temporary folder while the chart statistics are counted on the way;
the final transaction inserts them from those files ``BATCH`` rows at a time. So a 440,000-question
upload never holds all its items in the worker.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from itertools import islice
from pathlib import Path

from django.conf import settings
from django.db import transaction

from datasets_app import charts
from datasets_app.models import Dataset, DatasetItem, DroppedRow
from datasets_app.services import delete_prefix, images_prefix, thumbnails_prefix
from gpu_worker import Cancelled
from gpu_worker.cleaning import clean_dataset
from gpu_worker.safezip import Limits
from piggyback import files
from piggyback.jobs import background_job

log = logging.getLogger(__name__)

BATCH = 5000
_FORMATS = {"csv": Dataset.Format.CSV, "xlsx": Dataset.Format.CSV, "json": Dataset.Format.JSON, "jsonl": Dataset.Format.JSON,
            "vqa2": Dataset.Format.VQAV2}


def upload_limits() -> Limits:
    return Limits(
        max_members=settings.ZIP_MAX_MEMBERS,
        max_total_bytes=settings.ZIP_MAX_TOTAL_BYTES,
        max_ratio=float(settings.ZIP_MAX_RATIO),
        max_side=settings.IMAGE_MAX_SIDE,
    )


def cleaning_workers() -> int:
    """Processes for the image checks: the setting, else every core this worker may run on."""
    if settings.CLEANING_WORKERS > 0:
        return settings.CLEANING_WORKERS
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _store_images(local_root: Path, names: set, prefix: str) -> None:
    """Put the images that kept questions use into storage under ``prefix`` (a move on local disks)."""
    if not local_root.is_dir():
        return
    for path in local_root.iterdir():
        if path.name not in names:
            path.unlink()
    dest = files.storage_path(prefix)
    if dest is None:
        files.save_tree(local_root, prefix)
        return
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(local_root), str(dest))


def _item_fields(it: dict, prefix: str, thumbs_prefix: str) -> dict:
    return {
        "row": it["row"],
        "image": f"{prefix}/{it['image']}",
        "thumbnail": f"{thumbs_prefix}/{it['thumbnail']}" if it.get("thumbnail") else "",
        "image_original_name": it["image_original_name"][:300],
        "image_width": it["image_width"] or 0,
        "image_height": it["image_height"] or 0,
        "question": it["question"],
        "answers": it["answers"],
        "original_answers": it["original_answers"],
        "answer_type": it["answer_type"] or "",
        "question_type": (it["question_type"] or "")[:60],
    }


def _dropped_fields(d: dict) -> dict:
    return {"row": d["row"], "image": (d["image"] or "")[:300], "question": d["question"] or "",
            "reason_code": d["reason_code"][:40], "reason": d["reason"]}


class _Spool:
    """The cleaning's sink (gpu_worker.cleaning.ItemSink): model field values as JSON lines in ``folder``,
    the chart statistics counted as the chunks pass; :meth:`save` inserts them in ``BATCH``-row batches."""

    def __init__(self, folder: Path, prefix: str, thumbs_prefix: str):
        folder.mkdir(parents=True, exist_ok=True)
        self.prefix, self.thumbs_prefix = prefix, thumbs_prefix
        self.paths = {"items": folder / "items.jsonl", "dropped": folder / "dropped.jsonl"}
        self.files = {k: open(p, "w", encoding="utf-8") for k, p in self.paths.items()}
        self.stats = charts.StatsAccumulator()

    def add_items(self, items: list) -> None:
        self.stats.add(items)
        fh = self.files["items"]
        for it in items:
            fh.write(json.dumps(_item_fields(it, self.prefix, self.thumbs_prefix)) + "\n")

    def add_dropped(self, dropped: list) -> None:
        fh = self.files["dropped"]
        for d in dropped:
            fh.write(json.dumps(_dropped_fields(d)) + "\n")

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()

    def _read(self, kind: str):
        with open(self.paths[kind], encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)

    def save(self, dataset, dropped_images: list) -> None:
        """Insert the spooled rows (inside the caller's transaction), ``BATCH`` at a time."""
        self.close()
        items = (DatasetItem(dataset=dataset, **f) for f in self._read("items"))
        dropped = (DroppedRow(dataset=dataset, **f) for f in self._read("dropped"))
        images = (DroppedRow(dataset=dataset, row=None, image=(d["image"] or "")[:300], question="",
                             reason_code=d["reason_code"][:40], reason=d["reason"]) for d in dropped_images)
        for model, rows in ((DatasetItem, items), (DroppedRow, dropped), (DroppedRow, images)):
            while batch := list(islice(rows, BATCH)):  # bulk_create would list() a whole generator
                model.objects.bulk_create(batch, batch_size=BATCH)


def summary(counts: dict) -> str:
    return (f"Your dataset is ready: {counts.get('images_kept', 0):,} images, "
            f"{counts.get('rows_kept', 0):,} questions")


@background_job("datasets_app.Dataset")
def clean_dataset_job(row: Dataset, reporter):
    reporter(0.0, "Opening the uploaded files", force=True)
    questions = files.local_copy(row.questions_file.name)
    images = files.local_copy(row.images_file.name)
    annotations = files.local_copy(row.annotations_file.name) if row.annotations_file else None
    prefix = images_prefix(row)
    thumbs_prefix = thumbnails_prefix(row)
    delete_prefix(prefix)  # leftovers of an earlier attempt
    delete_prefix(thumbs_prefix)
    cache = Path(settings.WORKER_CACHE_DIR)
    cache.mkdir(parents=True, exist_ok=True)
    stored = False
    try:
        with tempfile.TemporaryDirectory(prefix=f"clean-{row.pk}-", dir=cache) as tmp:
            spool = _Spool(Path(tmp) / "spool", prefix, thumbs_prefix)
            try:
                result = clean_dataset(
                    questions, images, tmp, annotations,
                    max_side=settings.IMAGE_MAX_SIDE, limits=upload_limits(),
                    report=lambda p, stage: reporter(0.85 * p, stage),
                    should_cancel=reporter.should_cancel,
                    questions_name=row.questions_original_name or None,
                    images_name=row.images_original_name or None,
                    workers=cleaning_workers(), thumbnails=True, sink=spool,
                )
            finally:
                spool.close()
            if reporter.should_cancel():
                raise Cancelled()
            reporter(0.86, f"Storing {result.counts['images_kept']:,} images", force=True)
            stored = True
            _store_images(Path(result.image_root), result.used_images, prefix)
            _store_images(Path(result.thumb_root), result.used_thumbnails, thumbs_prefix)
            reporter(0.95, "Computing the exploration charts", force=True)
            stats = spool.stats.result()
            counts = dict(result.counts)
            kept = counts["rows_kept"]
            counts["rows_unlabelled"] = result.rows_unlabelled
            counts["images_used"] = len(result.used_images)
            if reporter.should_cancel():
                raise Cancelled()
            reporter(0.97, f"Saving {kept:,} questions", force=True)
            with transaction.atomic():
                DroppedRow.objects.filter(dataset=row).delete()
                DatasetItem.objects.filter(dataset=row).delete()
                spool.save(row, result.dropped_images)
                row._update(
                    counts=counts,
                    warnings=list(result.warnings),
                    level=result.level,
                    stats=stats,
                    has_answers=counts["rows_unlabelled"] < kept,
                    format=_FORMATS.get(result.source_format, row.format),
                    stage=summary(counts),
                )
    except BaseException:
        if stored:
            delete_prefix(prefix)
            delete_prefix(thumbs_prefix)
        raise
    return {"items": kept, "dropped": counts["rows_dropped"] + len(result.dropped_images)}
