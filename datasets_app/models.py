"""Datasets, their cleaned items, dropped rows, corrections and resumable uploads (the tenant, Project, is in
piggyback.models)."""
from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from piggyback.jobs import BackgroundRun
from piggyback.tenancy import TenantManager


def project_upload_name(project_id: int, filename: str, stem: str | None = None) -> str:
    """Server-made names: never trust the user's file name on disk (only its extension, cleaned, is kept)."""
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else "bin"
    ext = "".join(c for c in ext if c.isalnum())[:8] or "bin"
    return f"{project_uploads_prefix(project_id)}{stem or uuid.uuid4().hex}.{ext}"


def project_uploads_prefix(project_id: int) -> str:
    return f"projects/{project_id}/uploads/"


def upload_path(instance, filename):
    return project_upload_name(instance.project_id, filename)


class Dataset(BackgroundRun):
    """An uploaded dataset; its cleaning is the background job."""

    JOB_PREFIX = "clean"
    QUEUE = "default"
    TENANT_PATH = "project"

    class Format(models.TextChoices):
        CSV = "csv", "ZIP of images + CSV"
        VQAV2 = "vqav2", "VQAv2 JSON (questions + annotations) + images ZIP"
        JSON = "json", "JSON / JSONL rows + images ZIP"

    project = models.ForeignKey("piggyback.Project", on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=120)
    format = models.CharField(max_length=8, choices=Format.choices, default=Format.CSV)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    images_file = models.FileField(upload_to=upload_path, max_length=300)
    questions_file = models.FileField(upload_to=upload_path, max_length=300)
    annotations_file = models.FileField(upload_to=upload_path, max_length=300, blank=True, default="")
    images_original_name = models.CharField(max_length=255, blank=True, default="")
    questions_original_name = models.CharField(max_length=255, blank=True, default="")
    has_answers = models.BooleanField(default=False)
    # Cleaning outcome
    counts = models.JSONField(default=dict, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    level = models.CharField(max_length=10, blank=True, default="", help_text="success | warning")
    stats = models.JSONField(default=dict, blank=True, help_text="Exploration charts data")
    # Versions: an upload is version 1; "create version N+1" makes an immutable new dataset holding the
    # parent's items plus the pending corrections (image files are shared with the parent, not copied).
    version = models.PositiveIntegerField(default=1)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.RESTRICT, related_name="versions",
                               help_text="The dataset this version was made from")
    root = models.ForeignKey("self", null=True, blank=True, on_delete=models.RESTRICT, related_name="+",
                             help_text="Version 1 of this lineage (empty for version 1 itself)")

    objects = TenantManager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return self.name if self.version == 1 else f"{self.name} v{self.version}"

    @property
    def lineage_root_id(self) -> int:
        return self.root_id or self.pk



class DatasetItem(models.Model):
    """One question about one image, in the VQAv2 one-question-ten-answers form."""

    TENANT_PATH = "dataset__project"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="items")
    row = models.PositiveIntegerField(help_text="Row number in the uploaded file")
    image = models.CharField(max_length=300, help_text="Storage name of the cleaned image")
    thumbnail = models.CharField(max_length=300, blank=True, default="",
                                 help_text="Storage name of the 256 px WebP made at cleaning ('' for none)")
    image_original_name = models.CharField(max_length=300, blank=True, default="")
    image_width = models.PositiveIntegerField(default=0)
    image_height = models.PositiveIntegerField(default=0)
    question = models.TextField()
    answers = models.JSONField(default=list, blank=True, help_text="10 normalised answers, or []")
    original_answers = models.JSONField(default=list, blank=True)
    answer_type = models.CharField(max_length=10, blank=True, default="", db_index=True)
    question_type = models.CharField(max_length=60, blank=True, default="", db_index=True)

    objects = TenantManager()

    class Meta:
        ordering = ["dataset", "row"]
        indexes = [models.Index(fields=["dataset", "image"])]

    def __str__(self):
        return self.question[:80]

    @property
    def top_answer(self) -> str:
        if not self.answers:
            return ""
        from collections import Counter

        return Counter(self.answers).most_common(1)[0][0]


class DroppedRow(models.Model):
    """Nothing disappears silently: every row or image removed by cleaning, with its reason."""

    TENANT_PATH = "dataset__project"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="dropped")
    row = models.PositiveIntegerField(null=True, blank=True, help_text="Row in the uploaded file; empty for an image")
    image = models.CharField(max_length=300, blank=True, default="")
    question = models.TextField(blank=True, default="")
    reason_code = models.CharField(max_length=40, db_index=True)
    reason = models.TextField()

    objects = TenantManager()

    class Meta:
        ordering = ["dataset", "row", "id"]


class Correction(models.Model):
    """An expert's answer to one (image, question), waiting to go into the next version of ``dataset``.

    ``applied_in`` is empty while pending; creating version N+1 of ``dataset`` claims every pending
    correction. ``accepted``: the expert confirmed the model's own answer."""

    TENANT_PATH = "dataset__project"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="corrections")
    prediction = models.ForeignKey("evaluation_app.Prediction", null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="corrections")
    image = models.CharField(max_length=300, help_text="Storage name of the image (shared, not copied)")
    image_original_name = models.CharField(max_length=300, blank=True, default="")
    question = models.TextField()
    answer = models.CharField(max_length=300, help_text="The answer as the expert typed it")
    accepted = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    applied_in = models.ForeignKey(Dataset, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="applied_corrections")

    objects = TenantManager()

    class Meta:
        ordering = ["dataset", "created_at", "pk"]
        indexes = [models.Index(fields=["dataset", "applied_in"])]

    def __str__(self):
        return f"{self.question[:60]} → {self.answer}"


class ResumableUpload(models.Model):
    """One tus 1.0 upload: its bytes are appended straight into storage at ``storage_name`` (a local file,
    or an S3 multipart upload completed when the last byte arrives).

    Private to its user (another user's id answers 404); consumed (row deleted, file moved) when a dataset
    is created from it; removed when it expires unfinished."""

    id = models.CharField(primary_key=True, max_length=32, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    length = models.BigIntegerField()
    offset = models.BigIntegerField(default=0)
    filename = models.CharField(max_length=255, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    storage_name = models.CharField(max_length=300)
    # S3 storage: the multipart upload at storage_name ("" on a local disk), its uploaded parts
    # ([{"n", "etag", "size"}]) and the stored name of the tail object holding the bytes after the last part
    multipart_id = models.CharField(max_length=1024, blank=True, default="")
    parts = models.JSONField(default=list, blank=True)
    tail_name = models.CharField(max_length=320, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.filename or self.id} ({self.offset}/{self.length})"

    @property
    def is_complete(self) -> bool:
        return self.offset == self.length
