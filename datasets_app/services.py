"""Rules for datasets: upload checks, the cleaning job's queue, retry, delete, and item access.

The only place that creates datasets or enqueues their cleaning. The training and evaluation apps use
:func:`training_items` and :func:`dataset_image_root` to hand items to ``gpu_worker`` code.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import ProtectedError

from datasets_app.models import Dataset, DatasetItem, Project
from gpu_worker.errors import Conflict, InvalidInput
from piggyback import files, jobs
from piggyback.jobs import RunStatus
from piggyback.tenancy import require_role

log = logging.getLogger(__name__)

QUESTIONS_EXTENSIONS = {".csv", ".tsv", ".txt", ".json", ".jsonl", ".ndjson"}
IMAGES_EXTENSIONS = {".zip"}
_BINARY_HINTS = {
    b"PK\x03\x04": "a ZIP archive or an Excel workbook (.xlsx)",
    b"\xd0\xcf\x11\xe0": "an old Excel/Office file (.xls)",
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"\x1f\x8b": "a gzip archive",
}
SAMPLE_IMAGES = 200


class UploadError(InvalidInput):
    """A problem with an upload that the user can fix at once (400); ``field`` names the form field."""


class DatasetInUse(Conflict):
    """The dataset trained a model that still exists (409)."""


# ------------------------------------------------------------------------------------------------
# Storage names
# ------------------------------------------------------------------------------------------------
def storage_prefix(dataset: Dataset) -> str:
    return f"projects/{dataset.project_id}/datasets/{dataset.pk}"


def images_prefix(dataset: Dataset) -> str:
    return f"{storage_prefix(dataset)}/images"


# ------------------------------------------------------------------------------------------------
# Upload checks (cheap ones, before anything is stored; the job checks everything else)
# ------------------------------------------------------------------------------------------------
def _name_of(upload) -> str:
    return os.path.basename(getattr(upload, "name", "") or "")


def _head(upload, n: int = 8) -> bytes:
    pos = upload.tell() if hasattr(upload, "tell") else 0
    upload.seek(0)
    head = upload.read(n)
    upload.seek(pos)
    return head


def _check_size(upload, label: str, field: str) -> None:
    size = getattr(upload, "size", None)
    if size is None:
        return
    if size == 0:
        raise UploadError(f"The {label} '{_name_of(upload)}' is empty (0 bytes). Choose the right file.", field)
    if size > settings.UPLOAD_MAX_BYTES:
        raise UploadError(
            f"The {label} '{_name_of(upload)}' is {size / 1024**2:,.0f} MB; the limit is "
            f"{settings.UPLOAD_MAX_BYTES / 1024**2:,.0f} MB. Upload a smaller part of the dataset.", field)


def check_images_upload(upload) -> None:
    name = _name_of(upload)
    ext = PurePosixPath(name.lower()).suffix
    if ext not in IMAGES_EXTENSIONS:
        raise UploadError(
            f"The images file '{name}' is not a ZIP archive ({ext or 'no extension'}). Put all images in "
            f"one .zip file (e.g. right-click the folder > Compress) and upload that.", "images")
    _check_size(upload, "images ZIP", "images")
    if _head(upload, 4) not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise UploadError(
            f"The images file '{name}' is named .zip but is not a ZIP archive. Create the ZIP again and "
            f"upload it.", "images")


def check_questions_upload(upload, label: str = "questions file", field: str = "questions") -> None:
    name = _name_of(upload)
    ext = PurePosixPath(name.lower()).suffix
    if ext in (".xlsx", ".xls", ".ods"):
        raise UploadError(
            f"The {label} '{name}' is a spreadsheet. In Excel use 'Save As > CSV UTF-8' and upload the .csv "
            f"file.", field)
    if ext not in QUESTIONS_EXTENSIONS:
        raise UploadError(
            f"The {label} '{name}' has the extension {ext or '(none)'}; upload a .csv, .json or .jsonl "
            f"file.", field)
    _check_size(upload, label, field)
    head = _head(upload, 8)
    for magic, what in _BINARY_HINTS.items():
        if head.startswith(magic):
            raise UploadError(
                f"The {label} '{name}' is not a text file: it looks like {what}. Upload the questions as "
                f"CSV, JSON or JSON Lines.", field)


def detect_format(questions, annotations=None) -> str:
    """``csv`` | ``vqav2`` | ``json`` from the file names and the first bytes."""
    ext = PurePosixPath(_name_of(questions).lower()).suffix
    if ext in (".csv", ".tsv", ".txt"):
        return Dataset.Format.CSV
    if ext in (".jsonl", ".ndjson"):
        return Dataset.Format.JSON
    if annotations is not None:
        return Dataset.Format.VQAV2
    head = _head(questions, 64 * 1024).decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n")
    if head.startswith("{") and '"questions"' in head:
        return Dataset.Format.VQAV2
    return Dataset.Format.JSON


# ------------------------------------------------------------------------------------------------
# Create / retry / cancel / delete
# ------------------------------------------------------------------------------------------------
def create_dataset(user, project: Project, name: str, *, images, questions, annotations=None) -> Dataset:
    """Check the uploads, store them under server-made names and queue the cleaning job.

    Raises PermissionDenied without the editor role, :class:`UploadError` for an unusable upload."""
    require_role(user, project, "editor")
    name = (name or "").strip() or os.path.splitext(_name_of(questions))[0] or "Dataset"
    if images is None:
        raise UploadError("Choose the ZIP file with the images.", "images")
    if questions is None:
        raise UploadError("Choose the questions file (CSV, JSON or JSON Lines).", "questions")
    check_images_upload(images)
    check_questions_upload(questions)
    if annotations is not None:
        check_questions_upload(annotations, "annotations file", "annotations")
        if PurePosixPath(_name_of(annotations).lower()).suffix != ".json":
            raise UploadError("The annotations file must be the VQAv2 annotations .json file.", "annotations")
    fmt = detect_format(questions, annotations)
    from datasets_app.jobs import clean_dataset_job

    dataset = Dataset(
        project=project,
        name=name[:120],
        format=fmt,
        created_by=user,
        images_original_name=_name_of(images)[:255],
        questions_original_name=_name_of(questions)[:255],
    )
    try:
        with transaction.atomic():
            dataset.images_file.save(_name_of(images), images, save=False)
            dataset.questions_file.save(_name_of(questions), questions, save=False)
            if annotations is not None:
                dataset.annotations_file.save(_name_of(annotations), annotations, save=False)
            dataset.save()
            jobs.enqueue(dataset, clean_dataset_job, queue="default")
    except BaseException:
        for f in (dataset.images_file, dataset.questions_file, dataset.annotations_file):
            if f and f.name:
                default_storage.delete(f.name)  # no orphan uploads when the row was not created
        raise
    return dataset


def retry_cleaning(dataset: Dataset) -> str:
    """Queue the cleaning again for a failed or cancelled dataset."""
    from datasets_app.jobs import clean_dataset_job

    dataset.refresh_from_db()
    if dataset.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
        raise Conflict("Only a dataset whose cleaning failed or was cancelled can be cleaned again; "
                       f"this one is {dataset.status}.")
    with transaction.atomic():
        return jobs.enqueue(dataset, clean_dataset_job, queue="default")


def cancel_cleaning(dataset: Dataset) -> bool:
    return jobs.cancel(dataset)


def delete_stored_files(dataset: Dataset) -> None:
    """Remove the uploads and the cleaned images of a dataset from storage (best effort)."""
    for f in (dataset.images_file, dataset.questions_file, dataset.annotations_file):
        if f and f.name:
            try:
                default_storage.delete(f.name)
            except OSError:
                log.warning("could not delete %s", f.name)
    delete_prefix(images_prefix(dataset))


def delete_prefix(prefix: str) -> None:
    root = files.storage_path(prefix)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)
        return
    try:
        dirs, names = default_storage.listdir(prefix)
    except (FileNotFoundError, OSError):
        return
    for n in names:
        default_storage.delete(f"{prefix}/{n}")
    for d in dirs:
        delete_prefix(f"{prefix}/{d}")


def delete_dataset(dataset: Dataset) -> None:
    """Delete the row, its items and its stored files (after the transaction commits)."""
    if dataset.is_active:
        jobs.cancel(dataset)
    snapshot = Dataset(pk=dataset.pk, project_id=dataset.project_id, images_file=dataset.images_file.name,
                       questions_file=dataset.questions_file.name,
                       annotations_file=dataset.annotations_file.name)
    try:
        with transaction.atomic():
            dataset.delete()
            transaction.on_commit(lambda: delete_stored_files(snapshot))
    except ProtectedError as exc:
        n = len(exc.protected_objects)
        raise DatasetInUse(
            f"“{dataset.name}” was used to train {n} model{'s' if n != 1 else ''}. Delete "
            f"{'those training runs' if n != 1 else 'that training run'} first.") from exc


# ------------------------------------------------------------------------------------------------
# Sample dataset (easy-VQA)
# ------------------------------------------------------------------------------------------------
SAMPLE_FILES = {"easy-vqa-images.zip": "zip", "easy-vqa-questions.csv": "csv"}


def sample_files(max_images: int = SAMPLE_IMAGES) -> dict:
    """Paths of the cached sample ZIP + CSV (built once from the easy-vqa package)."""
    folder = Path(settings.VAR_DIR) / "sample" / f"easy-vqa-{max_images}"
    paths = {"zip": folder / "easy-vqa-images.zip", "csv": folder / "easy-vqa-questions.csv"}
    if not all(p.exists() for p in paths.values()):
        from gpu_worker.sample_data import build_sample_zip

        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="sample-", dir=folder.parent))
        try:
            build_sample_zip(tmp / "easy-vqa-images.zip", tmp / "easy-vqa-questions.csv",
                             max_images=max_images, seed=0)
            folder.mkdir(parents=True, exist_ok=True)
            for path in paths.values():
                os.replace(tmp / path.name, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return paths


def create_sample_dataset(user, project: Project, *, max_images: int = SAMPLE_IMAGES,
                          name: str = "easy-VQA sample") -> Dataset:
    paths = sample_files(max_images)
    with open(paths["zip"], "rb") as zf, open(paths["csv"], "rb") as cf:
        return create_dataset(user, project, name, images=File(zf, name=paths["zip"].name),
                              questions=File(cf, name=paths["csv"].name))


# ------------------------------------------------------------------------------------------------
# Items for training / evaluation (gpu_worker item dicts)
# ------------------------------------------------------------------------------------------------
def dataset_image_root(dataset: Dataset) -> Path:
    """Local folder holding the dataset's cleaned images (a cache for remote storages)."""
    return files.local_dir(images_prefix(dataset))


def training_items(dataset: Dataset, *, labelled_only: bool = False) -> tuple[list[dict], Path]:
    """(items, image_root): gpu_worker item dicts for every kept question of a cleaned dataset.

    ``item["image"]`` is relative to ``image_root``; ``item["id"]`` is the DatasetItem pk;
    ``answers`` is ``[]`` for unlabelled rows (pass ``labelled_only=True`` to skip them)."""
    if dataset.status != RunStatus.SUCCEEDED:
        raise Conflict(f"The dataset “{dataset.name}” is not ready yet (its cleaning is {dataset.status}).")
    prefix = images_prefix(dataset) + "/"
    qs = DatasetItem.objects.filter(dataset=dataset).order_by("row", "pk").values_list(
        "pk", "image", "question", "answers", "answer_type", "question_type", "row")
    items = []
    for pk, image, question, answers, atype, qtype, row in qs.iterator(chunk_size=5000):
        if labelled_only and not answers:
            continue
        rel = image[len(prefix):] if image.startswith(prefix) else PurePosixPath(image).name
        items.append({"id": pk, "image": rel, "question": question, "answers": list(answers or []),
                      "answer_type": atype, "question_type": qtype, "row": row})
    return items, dataset_image_root(dataset)


# ------------------------------------------------------------------------------------------------
# Cleaning report and item search
# ------------------------------------------------------------------------------------------------
REPORT_HEADER = ["row", "image", "question", "reason_code", "reason"]


def report_csv(dataset: Dataset) -> str:
    """The cleaning report (every dropped row and image) as spreadsheet-safe CSV text (with BOM)."""
    import io

    from gpu_worker.tabular import write_csv

    rows = dataset.dropped.order_by("row", "id").values_list(*REPORT_HEADER)
    buf = io.StringIO()
    buf.write("\ufeff")
    write_csv(buf, rows.iterator(chunk_size=5000), REPORT_HEADER)
    return buf.getvalue()


def search_items(dataset: Dataset, search: str = "", answer_type: str = "", question_type: str = ""):
    from django.db.models import Q

    qs = DatasetItem.objects.filter(dataset=dataset).order_by("row", "pk")
    search = (search or "").strip()
    if search:
        qs = qs.filter(Q(question__icontains=search) | Q(image_original_name__icontains=search)
                       | Q(answers__icontains=search))
    if answer_type:
        qs = qs.filter(answer_type=answer_type)
    if question_type:
        qs = qs.filter(question_type=question_type)
    return qs
