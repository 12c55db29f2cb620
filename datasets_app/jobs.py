"""The cleaning job: thin RQ entry point that runs gpu_worker.cleaning and writes the result back.

Nothing is written to the database until the very end, in one transaction, so a failed or cancelled
cleaning leaves no half-made items; stored images of a failed attempt are removed again.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
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


def _item_rows(dataset, items, prefix, thumbs_prefix):
    for it in items:
        yield DatasetItem(
            dataset=dataset,
            row=it["row"],
            image=f"{prefix}/{it['image']}",
            thumbnail=f"{thumbs_prefix}/{it['thumbnail']}" if it.get("thumbnail") else "",
            image_original_name=it["image_original_name"][:300],
            image_width=it["image_width"] or 0,
            image_height=it["image_height"] or 0,
            question=it["question"],
            answers=it["answers"],
            original_answers=it["original_answers"],
            answer_type=it["answer_type"] or "",
            question_type=(it["question_type"] or "")[:60],
        )


def _dropped_rows(dataset, result):
    for d in result.dropped:
        yield DroppedRow(dataset=dataset, row=d["row"], image=(d["image"] or "")[:300],
                         question=d["question"] or "", reason_code=d["reason_code"][:40], reason=d["reason"])
    for d in result.dropped_images:
        yield DroppedRow(dataset=dataset, row=None, image=(d["image"] or "")[:300], question="",
                         reason_code=d["reason_code"][:40], reason=d["reason"])


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
            result = clean_dataset(
                questions, images, tmp, annotations,
                max_side=settings.IMAGE_MAX_SIDE, limits=upload_limits(),
                report=lambda p, stage: reporter(0.85 * p, stage),
                should_cancel=reporter.should_cancel,
                questions_name=row.questions_original_name or None,
                images_name=row.images_original_name or None,
                workers=cleaning_workers(), thumbnails=True,
            )
            if reporter.should_cancel():
                raise Cancelled()
            reporter(0.86, f"Storing {result.counts['images_kept']:,} images", force=True)
            used = {it["image"] for it in result.items}
            stored = True
            _store_images(Path(result.image_root), used, prefix)
            _store_images(Path(result.thumb_root), {it["thumbnail"] for it in result.items}, thumbs_prefix)
        reporter(0.95, "Computing the exploration charts", force=True)
        stats = charts.compute_stats(result.items)
        counts = dict(result.counts)
        counts["rows_unlabelled"] = sum(1 for it in result.items if not it["answers"])
        counts["images_used"] = len(used)
        if reporter.should_cancel():
            raise Cancelled()
        reporter(0.97, f"Saving {len(result.items):,} questions", force=True)
        with transaction.atomic():
            DroppedRow.objects.filter(dataset=row).delete()
            DatasetItem.objects.filter(dataset=row).delete()
            DatasetItem.objects.bulk_create(_item_rows(row, result.items, prefix, thumbs_prefix), batch_size=BATCH)
            DroppedRow.objects.bulk_create(_dropped_rows(row, result), batch_size=BATCH)
            row._update(
                counts=counts,
                warnings=list(result.warnings),
                level=result.level,
                stats=stats,
                has_answers=counts["rows_unlabelled"] < len(result.items),
                format=_FORMATS.get(result.source_format, row.format),
                stage=summary(counts),
            )
    except BaseException:
        if stored:
            delete_prefix(prefix)
            delete_prefix(thumbs_prefix)
        raise
    return {"items": len(result.items), "dropped": len(result.dropped) + len(result.dropped_images)}
