"""Corrections and dataset versions: an expert's answers become version N+1 of a dataset.

* :func:`record_correction` keeps one pending correction per (dataset, image, question) (the latest wins).
* :func:`create_version` makes version N+1 of a dataset: an immutable new Dataset row (``version``,
  ``parent``, ``root``) that claims every pending correction and queues :func:`version_dataset_job`, which
  merges them into the parent's items with the cleaning rules (:mod:`gpu_worker.versioning`) and writes
  the items, the cleaning report and the charts like an upload's cleaning. Image files are shared.
* :func:`image_root_for` gives the training and evaluation jobs one local folder for a version's images.
"""
from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Q

from datasets_app import charts
from datasets_app.models import Correction, Dataset, DatasetItem, DroppedRow
from piggyback import files, jobs
from piggyback.jobs import RunStatus, background_job
from piggyback.tenancy import require_role

MAX_ANSWER_CHARS = 300
_ITEM_FIELDS = ("image", "image_original_name", "image_width", "image_height", "question", "answers",
                "original_answers", "answer_type", "question_type", "row")


class VersionError(ValueError):
    """A request the user can fix (400); ``field`` names the offending field."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


# ------------------------------------------------------------------------------------------ lineage
def lineage(dataset: Dataset):
    """Every version of the dataset's lineage (version 1 and all versions made from it), oldest first."""
    root_id = dataset.lineage_root_id
    return Dataset.objects.filter(Q(pk=root_id) | Q(root_id=root_id)).order_by("version", "pk")


def newer_version(dataset: Dataset) -> Dataset | None:
    """The newest ready version of the lineage above ``dataset`` (None when there is none)."""
    return (lineage(dataset).filter(version__gt=dataset.version, status=RunStatus.SUCCEEDED)
            .order_by("-version", "-pk").first())


def pending_corrections(dataset: Dataset):
    return Correction.objects.filter(dataset=dataset, applied_in__isnull=True).order_by("created_at", "pk")


# ------------------------------------------------------------------------------------------ corrections
def record_correction(user, prediction, answer, *, dataset: Dataset | None = None,
                      accepted: bool = False) -> tuple[Correction, bool]:
    """Record (or update) the pending correction of a prediction's (image, question) for ``dataset``.

    Default dataset: the one the prediction's training run was trained on. Returns (correction, created).
    Raises PermissionDenied without the editor role, :class:`VersionError` for unusable input."""
    from gpu_worker.vqa_normalize import normalize_answer

    require_role(user, prediction.project, "editor")
    if dataset is None:
        run = prediction.training_run
        if run is None:
            raise VersionError("This answer comes from a zero-shot model, which was not trained on a dataset: "
                               "say which dataset of the project the correction is for (\"dataset\": <id>).",
                               "dataset")
        dataset = run.dataset
    if dataset.project_id != prediction.project_id:
        raise VersionError(f"Dataset {dataset.pk} is not a dataset of this prediction's project.", "dataset")
    if dataset.status != RunStatus.SUCCEEDED:
        raise VersionError(f"The dataset “{dataset}” is not ready (its cleaning is {dataset.status}); corrections "
                           "go into ready datasets only.", "dataset")
    text = " ".join(str(prediction.answer if accepted and not answer else answer or "").split())
    if not text:
        raise VersionError("Type the right answer (or accept the model's answer).", "answer")
    if len(text) > MAX_ANSWER_CHARS:
        raise VersionError(f"Answers are limited to {MAX_ANSWER_CHARS} characters.", "answer")
    if not normalize_answer(text):
        raise VersionError(f"“{text}” is empty once normalised like the VQA answers (punctuation and articles "
                           "are removed); type a word or a number.", "answer")
    if not prediction.image:
        raise VersionError("The image of this prediction is not stored any more.", "answer")
    question = " ".join(prediction.question.split())
    with transaction.atomic():
        existing = (Correction.objects.select_for_update()
                    .filter(dataset=dataset, applied_in__isnull=True, image=prediction.image, question=question)
                    .first())
        fields = dict(answer=text, accepted=bool(accepted), created_by=user, prediction=prediction,
                      image_original_name=prediction.image_original_name[:300])
        if existing is not None:
            for k, v in fields.items():
                setattr(existing, k, v)
            existing.save(update_fields=[*fields])
            return existing, False
        return Correction.objects.create(dataset=dataset, image=prediction.image, question=question, **fields), True


# ------------------------------------------------------------------------------------------ versions
def create_version(user, dataset: Dataset) -> Dataset:
    """Version N+1 of ``dataset`` with its pending corrections; the merge runs as a job on the default queue."""
    require_role(user, dataset, "editor")
    if dataset.status != RunStatus.SUCCEEDED:
        raise VersionError(f"The dataset “{dataset}” is not ready (its cleaning is {dataset.status}).")
    with transaction.atomic():
        root = Dataset.objects.select_for_update().get(pk=dataset.lineage_root_id)  # one numbering per lineage
        pending = list(pending_corrections(dataset).select_for_update().values_list("pk", flat=True))
        if not pending:
            raise VersionError(f"“{dataset}” has no pending corrections: correct some answers in an evaluation's "
                               "review queue first.")
        top = lineage(dataset).aggregate(top=Max("version"))["top"] or dataset.version
        version = Dataset.objects.create(
            project_id=dataset.project_id, name=root.name, format=dataset.format, created_by=user,
            images_file="", questions_file="", images_original_name=dataset.images_original_name,
            questions_original_name=f"{len(pending)} corrections", has_answers=dataset.has_answers,
            version=top + 1, parent=dataset, root=root, stage="Waiting to merge the corrections")
        Correction.objects.filter(pk__in=pending).update(applied_in=version)
        jobs.enqueue(version, version_dataset_job, queue="default")
    return version


def check_stored_image(name: str) -> tuple[bool, int, int, str]:
    """(ok, width, height, reason) of a stored image a correction brings into a dataset."""
    from django.core.files.storage import default_storage
    from PIL import Image, UnidentifiedImageError

    try:
        if not name or not default_storage.exists(name):
            return False, 0, 0, "the image file is not stored any more"
        with Image.open(files.local_copy(name)) as img:
            img.verify()
        with Image.open(files.local_copy(name)) as img:
            width, height = img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False, 0, 0, "the image file cannot be read"
    if max(width, height) > settings.IMAGE_MAX_SIDE:
        return False, 0, 0, f"the image is larger than {settings.IMAGE_MAX_SIDE} pixels"
    return True, width, height, ""


@background_job("datasets_app.Dataset")
def version_dataset_job(row: Dataset, reporter):
    from gpu_worker.versioning import build_version

    parent = row.parent
    reporter(0.0, f"Reading version {parent.version}", force=True)
    parent_items = list(DatasetItem.objects.filter(dataset=parent).order_by("row", "pk").values(*_ITEM_FIELDS))
    corrections = [
        {"id": c["pk"], "image": c["image"], "image_original_name": c["image_original_name"],
         "question": c["question"], "answer": c["answer"], "prediction": c["prediction_id"]}
        for c in row.applied_corrections.order_by("created_at", "pk").values(
            "pk", "image", "image_original_name", "question", "answer", "prediction_id")]
    reporter(0.2, f"Merging {len(corrections):,} corrections", force=True)
    result = build_version(parent_items, corrections, check_image=check_stored_image,
                           should_cancel=reporter.should_cancel)
    reporter(0.8, "Computing the exploration charts", force=True)
    counts = dict(result.counts)
    counts["rows_unlabelled"] = sum(1 for it in result.items if not it["answers"])
    counts["images_used"] = len({it["image"] for it in result.items})
    with transaction.atomic():
        DroppedRow.objects.filter(dataset=row).delete()
        DatasetItem.objects.filter(dataset=row).delete()
        DatasetItem.objects.bulk_create(
            (DatasetItem(dataset=row, **{k: it[k] for k in _ITEM_FIELDS}) for it in result.items), batch_size=5000)
        DroppedRow.objects.bulk_create(
            (DroppedRow(dataset=row, row=d["row"], image=d["image"][:300], question=d["question"],
                        reason_code=d["reason_code"][:40], reason=d["reason"]) for d in result.dropped),
            batch_size=5000)
        row._update(counts=counts, warnings=list(result.warnings), level=result.level,
                    stats=charts.compute_stats(result.items), has_answers=counts["rows_unlabelled"] < len(result.items),
                    stage=(f"Version {row.version} is ready: {counts['rows_kept']:,} questions "
                           f"({counts['replaced']:,} answers corrected, {counts['added']:,} questions added)"))
    return {"items": len(result.items), "dropped": len(result.dropped)}


# ------------------------------------------------------------------------------------------ images
def image_root_for(dataset: Dataset, names) -> tuple[Path, str]:
    """(local folder, storage prefix the items' names are relative to) for a version's shared images.

    A version's items point at the files of earlier versions and of evaluations in the same project, so
    the root is the project's storage folder; a remote storage gets only the named files, cached."""
    prefix = f"projects/{dataset.project_id}"
    local = files.storage_path(prefix)
    if local is not None:
        return local, prefix
    digest = hashlib.sha256(f"version-{dataset.pk}".encode()).hexdigest()[:24]
    target = Path(settings.WORKER_CACHE_DIR) / "dirs" / digest
    for name in set(names):
        rel = PurePosixPath(name).relative_to(prefix) if name.startswith(prefix + "/") else PurePosixPath(name).name
        dest = target / rel
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = files.local_copy(name)
            dest.write_bytes(Path(src).read_bytes())
    return target, prefix
