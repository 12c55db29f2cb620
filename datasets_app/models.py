"""Projects (the tenant), memberships with roles, datasets and their cleaned items."""
from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from piggyback.jobs import BackgroundRun
from piggyback.tenancy import TenantManager, forget_roles


def upload_path(instance, filename):
    """Server-made names: never trust the user's file name on disk."""
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else "bin"
    ext = "".join(c for c in ext if c.isalnum())[:8] or "bin"
    return f"projects/{instance.project_id}/uploads/{uuid.uuid4().hex}.{ext}"


class Project(models.Model):
    TENANT_PATH = ""

    name = models.CharField(max_length=120)
    description = models.TextField(blank=True, default="")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_projects"
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="projects"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantManager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return self.name

    def role_for(self, user) -> str | None:
        """The membership query (uncached); access checks go through ``piggyback.tenancy``."""
        if not user or not user.is_authenticated:
            return None
        return self.memberships.filter(user=user).order_by().values_list("role", flat=True).first()


class Membership(models.Model):
    class Role(models.TextChoices):
        VIEWER = "viewer", "Viewer (read only)"
        EDITOR = "editor", "Editor (upload, train, evaluate)"
        OWNER = "owner", "Owner (members, delete)"

    TENANT_PATH = "project"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    added_at = models.DateTimeField(auto_now_add=True)

    objects = TenantManager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="unique_membership")]
        ordering = ["project", "user__username"]

    def __str__(self):
        return f"{self.user} ({self.role}) in {self.project}"


class Dataset(BackgroundRun):
    """An uploaded dataset; its cleaning is the background job."""

    JOB_PREFIX = "clean"
    QUEUE = "default"
    TENANT_PATH = "project"

    class Format(models.TextChoices):
        CSV = "csv", "ZIP of images + CSV"
        VQAV2 = "vqav2", "VQAv2 JSON (questions + annotations) + images ZIP"
        JSON = "json", "JSON / JSONL rows + images ZIP"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="datasets")
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

    objects = TenantManager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return self.name


class DatasetItem(models.Model):
    """One question about one image, in the VQAv2 one-question-ten-answers form."""

    TENANT_PATH = "dataset__project"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="items")
    row = models.PositiveIntegerField(help_text="Row number in the uploaded file")
    image = models.CharField(max_length=300, help_text="Storage name of the cleaned image")
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


models.signals.post_save.connect(forget_roles, sender=Membership, dispatch_uid="pb-forget-roles-save")
models.signals.post_delete.connect(forget_roles, sender=Membership, dispatch_uid="pb-forget-roles-delete")
