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
from django.db.models import ProtectedError, RestrictedError

from datasets_app.models import Dataset, DatasetItem, ResumableUpload, project_uploads_prefix, upload_path
from gpu_worker.errors import Conflict, InvalidInput
from gpu_worker.items import SlimItem
from piggyback import files, jobs
from piggyback.jobs import RunStatus
from piggyback.models import Project
from piggyback.tenancy import require_role

log = logging.getLogger(__name__)

QUESTIONS_EXTENSIONS = {".csv", ".tsv", ".txt", ".json", ".jsonl", ".ndjson", ".xlsx"}
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


def thumbnails_prefix(dataset: Dataset) -> str:
    return f"{storage_prefix(dataset)}/thumbs"


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
    limit = getattr(upload, "size_limit", settings.UPLOAD_MAX_BYTES)
    if size > limit:
        raise UploadError(
            f"The {label} '{_name_of(upload)}' is {size / 1024**2:,.0f} MB; the limit is "
            f"{limit / 1024**2:,.0f} MB. Upload a smaller part of the dataset.", field)


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
    if ext in (".xls", ".ods"):
        raise UploadError(
            f"The {label} '{name}' is an older or non-Excel spreadsheet ({ext}). In your spreadsheet program "
            f"use 'Save As > Excel Workbook (.xlsx)' or 'CSV UTF-8' and upload that file.", field)
    if ext not in QUESTIONS_EXTENSIONS:
        raise UploadError(
            f"The {label} '{name}' has the extension {ext or '(none)'}; upload a .csv, .xlsx, .json or .jsonl "
            f"file.", field)
    _check_size(upload, label, field)
    head = _head(upload, 8)
    if ext == ".xlsx":
        if not head.startswith(b"PK\x03\x04"):
            raise UploadError(f"The {label} '{name}' is named .xlsx but is not an Excel workbook. Save it again "
                              f"in Excel as 'Excel Workbook (.xlsx)' or as 'CSV UTF-8'.", field)
        return
    for magic, what in _BINARY_HINTS.items():
        if head.startswith(magic):
            raise UploadError(
                f"The {label} '{name}' is not a text file: it looks like {what}. Upload the questions as "
                f"CSV, JSON or JSON Lines.", field)


def detect_format(questions, annotations=None) -> str:
    """``csv`` | ``vqav2`` | ``json`` from the file names and the first bytes."""
    ext = PurePosixPath(_name_of(questions).lower()).suffix
    if ext in (".csv", ".tsv", ".txt", ".xlsx"):
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
# Finished resumable uploads, handed to create_dataset like uploaded files (moved, never copied)
# ------------------------------------------------------------------------------------------------
class StoredUpload(File):
    """A finished tus upload (:class:`ResumableUpload`) seen as an uploaded file (on S3 the checks' reads of the
    first bytes are ranged GETs: the object is never downloaded here)."""

    def __init__(self, upload: ResumableUpload):
        super().__init__(files.open_ranged(upload.storage_name, upload.length), name=upload.filename or upload.pk)
        self.upload = upload
        self.size = upload.length
        self.size_limit = settings.RESUMABLE_UPLOAD_MAX_BYTES


def claim_upload(user, upload_id: str, field: str) -> StoredUpload:
    """The user's finished upload ``upload_id`` (the last segment of its tus Location)."""
    from django.utils import timezone

    up = ResumableUpload.objects.filter(user=user, pk=str(upload_id).strip().strip("/").rsplit("/", 1)[-1],
                                        expires_at__gte=timezone.now()).first()
    if up is None:
        raise UploadError(f"There is no upload '{str(upload_id)[:40]}' of yours (it expired, was already used "
                          f"for a dataset, or was deleted). Upload the file again.", field)
    if not up.is_complete:
        raise UploadError(f"The upload of '{up.filename or up.pk}' is not finished: {up.offset:,} of "
                          f"{up.length:,} bytes arrived. Resume it, then create the dataset.", field)
    try:
        if default_storage.exists(up.storage_name):
            return StoredUpload(up)
    except FileNotFoundError:   # removed between the two calls
        pass
    raise _bytes_gone(up, field)


def _bytes_gone(up: ResumableUpload, field: str) -> UploadError:
    return UploadError(f"The bytes of the upload '{up.filename or up.pk}' are no longer in the storage (removed by "
                       f"its clean-up, or with the project it was sent to); upload the file again.", field)


def _refuse_one_upload_twice(given: dict) -> None:
    seen: dict[str, str] = {}
    for field, upload in given.items():
        if isinstance(upload, StoredUpload):
            if upload.upload.pk in seen:
                raise UploadError(f"The {seen[upload.upload.pk]} and the {field} are the same upload "
                                  f"('{upload.upload.filename or upload.upload.pk}'); each needs its own file.", field)
            seen[upload.upload.pk] = field


def _in_place(field, upload) -> bool:
    """An upload made for this dataset's project (tus metadata ``project``) already lies under the project's
    upload names: the dataset takes it where it is, with no rename or copy."""
    return isinstance(upload, StoredUpload) and upload.upload.storage_name.startswith(
        project_uploads_prefix(field.instance.project_id))


def _store(field, upload) -> None:
    if isinstance(upload, StoredUpload):
        upload.close()
        try:
            field.name = (upload.upload.storage_name if _in_place(field, upload) else
                          files.move(upload.upload.storage_name, upload_path(field.instance, _name_of(upload))))
        except FileNotFoundError:
            raise _bytes_gone(upload.upload, field.field.name.removesuffix("_file")) from None
        upload.upload.delete()
    else:
        field.save(_name_of(upload), upload, save=False)


def _unstore(field, upload) -> None:
    """Undo :func:`_store` after a failure: a moved upload goes back where it was, a saved copy is deleted (an
    upload taken in place stays; the rolled-back transaction brings its row back)."""
    if not (field and field.name):
        return
    if isinstance(upload, StoredUpload):
        if field.name != upload.upload.storage_name:
            files.move(field.name, upload.upload.storage_name)
    else:
        default_storage.delete(field.name)


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
    _refuse_one_upload_twice({"images": images, "questions": questions, "annotations": annotations})
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
    pairs = [(dataset.images_file, images), (dataset.questions_file, questions)]
    if annotations is not None:
        pairs.append((dataset.annotations_file, annotations))
    try:
        with transaction.atomic():
            for field, upload in pairs:
                _store(field, upload)
            dataset.save()
            jobs.enqueue(dataset, clean_dataset_job, queue="default")
    except BaseException:
        for field, upload in pairs:
            _unstore(field, upload)  # no orphan files when the row was not created
        raise
    return dataset


def retry_cleaning(dataset: Dataset) -> str:
    """Queue the cleaning again for a failed or cancelled dataset."""
    from datasets_app.jobs import clean_dataset_job
    from datasets_app.versions import version_dataset_job

    dataset.refresh_from_db()
    if dataset.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
        raise Conflict("Only a dataset whose cleaning failed or was cancelled can be cleaned again; "
                       f"this one is {dataset.status}.")
    job = version_dataset_job if dataset.parent_id is not None else clean_dataset_job  # a version merges again
    with transaction.atomic():
        return jobs.enqueue(dataset, job, queue="default")


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
    delete_prefix(thumbnails_prefix(dataset))


def delete_stored_name(name: str) -> None:
    try:
        default_storage.delete(name)
    except OSError:
        log.warning("could not delete %s", name)


def delete_prefix(prefix: str) -> None:
    files.delete_prefix(prefix)


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
    except (ProtectedError, RestrictedError) as exc:
        n = dataset.training_runs.count()
        others = [f"{c} {label}{'s' if c != 1 else ''}" for c, label in
                  ((Dataset.objects.filter(parent=dataset).count(), "newer version"),
                   (dataset.evaluations.count(), "evaluation")) if c]
        also = f" It is also used by {' and '.join(others)}." if others else ""
        if n:
            raise DatasetInUse(
                f"“{dataset.name}” was used to train {n} model{'s' if n != 1 else ''}. Delete "
                f"{'those training runs' if n != 1 else 'that training run'} first.{also}") from exc
        raise DatasetInUse(f"“{dataset}” is still used by {' and '.join(others) or 'other data'}; delete "
                           "those first.") from exc


# ------------------------------------------------------------------------------------------------
# Sample dataset (easy-VQA)
# ------------------------------------------------------------------------------------------------
SAMPLE_FILES = {"easy-vqa-images.zip": "zip", "easy-vqa-questions.csv": "csv"}


def _cached_pair(folder: Path, build) -> dict:
    """{"zip", "csv"} paths in ``folder``, written once by ``build(zip_path, csv_path)`` (atomically)."""
    paths = {"zip": folder / "images.zip", "csv": folder / "questions.csv"}
    if not all(p.exists() for p in paths.values()):
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="sample-", dir=folder.parent))
        try:
            build(tmp / "images.zip", tmp / "questions.csv")
            folder.mkdir(parents=True, exist_ok=True)
            for path in paths.values():
                os.replace(tmp / path.name, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return paths


def sample_files(max_images: int = SAMPLE_IMAGES) -> dict:
    """Paths of the cached sample ZIP + CSV (built once from the easy-vqa package)."""
    from gpu_worker.sample_data import build_sample_zip

    folder = Path(settings.VAR_DIR) / "sample" / f"easy-vqa-{max_images}"
    return _cached_pair(folder, lambda z, c: build_sample_zip(z, c, max_images=max_images, seed=0))


def split_files(split: str, max_images: int | None = None) -> dict:
    """Paths of a whole easy-VQA split (or its first ``max_images`` images) as cached ZIP + CSV."""
    from gpu_worker.sample_data import write_split

    folder = Path(settings.VAR_DIR) / "sample" / f"easy-vqa-{split}-{max_images or 'all'}"
    return _cached_pair(folder, lambda z, c: write_split(split, z, c, max_images=max_images))


def _create_from_files(user, project, name, paths, filenames=("easy-vqa-images.zip", "easy-vqa-questions.csv")):
    with open(paths["zip"], "rb") as zf, open(paths["csv"], "rb") as cf:
        return create_dataset(user, project, name, images=File(zf, name=filenames[0]),
                              questions=File(cf, name=filenames[1]))


def create_sample_dataset(user, project: Project, *, max_images: int = SAMPLE_IMAGES,
                          name: str = "easy-VQA sample") -> Dataset:
    return _create_from_files(user, project, name, sample_files(max_images))


DEMO_TRAIN_NAME = "easy-VQA train"
DEMO_HOLDOUT_NAME = "easy-VQA test (holdout)"


def create_demo_datasets(user, project: Project, *, max_images: int | None = None) -> list[Dataset]:
    """The demo project's data: the whole easy-VQA train split (4,000 images, 38,575 questions) and, as a
    separate holdout set, its test split (1,000 images, 9,673 questions). Both go through the normal upload
    checks and cleaning job. ``max_images`` caps each split (tests); None = the full splits."""
    out = []
    for split, name in (("train", DEMO_TRAIN_NAME), ("test", DEMO_HOLDOUT_NAME)):
        out.append(_create_from_files(user, project, name, split_files(split, max_images),
                                      (f"easy-vqa-{split}.zip", f"easy-vqa-{split}.csv")))
    return out


# ------------------------------------------------------------------------------------------------
# Items for training / evaluation (gpu_worker item dicts)
# ------------------------------------------------------------------------------------------------
def dataset_image_root(dataset: Dataset) -> Path:
    """Local folder holding the dataset's cleaned images (a cache for remote storages)."""
    return files.local_dir(images_prefix(dataset))


def require_ready(dataset: Dataset) -> None:
    """Conflict (409) unless the dataset's cleaning has succeeded."""
    if dataset.status != RunStatus.SUCCEEDED:
        raise Conflict(f"The dataset “{dataset.name}” is not ready yet (its cleaning is {dataset.status}).")


def item_image_root(dataset: Dataset, items) -> tuple[Path, str]:
    """(local folder, storage prefix ending in "/"): an item's stored image name without the prefix is its path
    in the folder (images elsewhere: their file name). ``items``: the dataset's items that will be read."""
    if dataset.parent_id is not None:  # a version shares the image files of earlier versions and evaluations
        from datasets_app.versions import image_root_for

        root, prefix = image_root_for(dataset, items.order_by().values_list("image", flat=True).distinct())
        return root, prefix + "/"
    return dataset_image_root(dataset), images_prefix(dataset) + "/"


def training_items(dataset: Dataset, *, labelled_only: bool = False,
                   slim: bool = False) -> tuple[list[dict], Path]:
    """(items, image_root): gpu_worker item dicts for every kept question of a cleaned dataset.

    ``item["image"]`` is relative to ``image_root``; ``item["id"]`` is the DatasetItem pk;
    ``answers`` is ``[]`` for unlabelled rows (pass ``labelled_only=True`` to skip them).

    Memory (440,000 questions): rows are read 5,000 at a time and turned into items at once, and the
    strings that repeat (image names, answers, answer/question types, templated questions) are shared,
    about 0.6 KB an item instead of 1.3 KB. ``slim=True`` (training) keeps only what training reads -
    ``image``, ``question``, ``answers`` (a tuple shared by every item with the same answers),
    ``answer_type`` and ``question_type`` - in a :class:`gpu_worker.items.SlimItem` (a read-only mapping
    with slots), about 0.17 KB an item, most of it the question text. (Batch evaluation reads the items a chunk at a
    time instead: evaluation_app.jobs._DatasetChunks.)"""
    require_ready(dataset)
    qs = DatasetItem.objects.filter(dataset=dataset)
    if labelled_only:
        qs = qs.exclude(answers=[])
    root, prefix = item_image_root(dataset, qs)
    shared: dict = {}   # one str object per distinct value

    def one(value):
        return shared.setdefault(value, value)

    per_image: dict = {}   # stored name -> (relative name, stored name)
    items = []
    rows = qs.order_by("row", "pk").values_list(
        "pk", "image", "question", "answers", "answer_type", "question_type", "row", "image_original_name")
    for pk, image, question, answers, atype, qtype, row, original in rows.iterator(chunk_size=5000):
        if labelled_only and not answers:
            continue
        names = per_image.get(image)
        if names is None:
            rel = image[len(prefix):] if image.startswith(prefix) else PurePosixPath(image).name
            names = per_image[image] = (rel, image)
        if slim:
            items.append(SlimItem(names[0], one(question), one(tuple(map(one, answers or ()))), one(atype),
                                  one(qtype)))
            continue
        items.append({"id": pk, "image": names[0], "question": one(question),
                      "answers": [one(a) for a in answers or []], "answer_type": one(atype),
                      "question_type": one(qtype), "row": row, "stored": names[1],
                      "image_original_name": one(original)})
    return items, root


def item_thumbnail(item: DatasetItem) -> str:
    """Storage name of the item's thumbnail; made once here for items cleaned before thumbnails existed."""
    if item.thumbnail:
        return item.thumbnail
    import io

    from PIL import Image

    from gpu_worker.safezip import make_thumbnail

    name = f"{thumbnails_prefix(item.dataset)}/{PurePosixPath(item.image).stem}.webp"
    if not default_storage.exists(name):
        buf = io.BytesIO()
        try:
            with default_storage.open(item.image, "rb") as fh, Image.open(fh) as im:
                im.load()
                made = make_thumbnail(im, buf)
        except (OSError, ValueError, Image.DecompressionBombError):
            made = False
        if not made:
            return item.image  # serve_file answers 404 when the image itself is gone
        default_storage.save(name, File(io.BytesIO(buf.getvalue()), name=PurePosixPath(name).name))
    DatasetItem.objects.filter(dataset=item.dataset_id, image=item.image).update(thumbnail=name)
    return name


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
