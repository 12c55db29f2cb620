"""Batch evaluations and every prediction (single, sample or batch) with its attention overlay."""
from __future__ import annotations

from django.conf import settings
from django.db import models

from datasets_app.models import upload_path
from piggyback.jobs import BackgroundRun, RunStatus
from piggyback.targets import exactly_one_target
from piggyback.tenancy import TenantManager


def margin_of(top_k, confidence) -> float:
    """Gap between the two best answers' scores (the single answer's score when there is only one)."""
    scores = sorted((float(t.get("score") or 0.0) for t in (top_k or []) if isinstance(t, dict)), reverse=True)
    if len(scores) >= 2:
        return round(scores[0] - scores[1], 6)
    return round(scores[0] if scores else float(confidence or 0.0), 6)


class Evaluation(BackgroundRun):
    JOB_PREFIX = "eval"
    QUEUE = "gpu"
    TENANT_PATH = "project"

    project = models.ForeignKey("piggyback.Project", on_delete=models.CASCADE, related_name="evaluations")
    training_run = models.ForeignKey(
        "training_app.TrainingRun", null=True, blank=True, on_delete=models.CASCADE, related_name="evaluations"
    )
    model = models.ForeignKey(
        "training_app.PretrainedModel", null=True, blank=True, on_delete=models.PROTECT, related_name="evaluations",
        help_text="Zero-shot model (when no training run is given)",
    )
    dataset = models.ForeignKey(
        "datasets_app.Dataset", null=True, blank=True, on_delete=models.RESTRICT, related_name="evaluations",
        help_text="A ready dataset of the project evaluated instead of uploaded files",
    )
    name = models.CharField(max_length=120, blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    images_file = models.FileField(upload_to=upload_path, max_length=300)
    questions_file = models.FileField(upload_to=upload_path, max_length=300)
    params = models.JSONField(default=dict, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    ece = models.FloatField(
        null=True, blank=True,
        help_text="Expected calibration error of the confidences (15 equal-width bins, correctness = official "
                  "VQA accuracy); empty when the questions had no answers",
    )
    output_dir = models.CharField(max_length=300, blank=True, default="")

    objects = TenantManager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [exactly_one_target("evaluation_exactly_one_target")]

    def __str__(self):
        return self.name or f"Evaluation {self.pk}"

    def shown_predictions(self):
        """Its predictions once it has succeeded, none before: a running evaluation stores its answers chunk by
        chunk, and a worker killed half-way leaves some behind until the retry replaces them."""
        if self.status != RunStatus.SUCCEEDED:
            return self.predictions.none()
        return self.predictions.all()


class Prediction(models.Model):
    class Kind(models.TextChoices):
        SINGLE = "single", "Single question"
        SAMPLE = "sample", "Sample image"
        BATCH = "batch", "Batch"

    TENANT_PATH = "project"

    project = models.ForeignKey("piggyback.Project", on_delete=models.CASCADE, related_name="predictions")
    kind = models.CharField(max_length=8, choices=Kind.choices, db_index=True)
    evaluation = models.ForeignKey(
        Evaluation, null=True, blank=True, on_delete=models.CASCADE, related_name="predictions"
    )
    training_run = models.ForeignKey(
        "training_app.TrainingRun", null=True, blank=True, on_delete=models.CASCADE, related_name="predictions"
    )
    model = models.ForeignKey(
        "training_app.PretrainedModel", null=True, blank=True, on_delete=models.PROTECT, related_name="predictions"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="predictions"
    )
    row = models.PositiveIntegerField(null=True, blank=True)
    image = models.CharField(max_length=300, help_text="Storage name of the image")
    image_original_name = models.CharField(max_length=300, blank=True, default="")
    question = models.TextField()
    answer = models.CharField(max_length=300)
    confidence = models.FloatField(default=0)
    margin = models.FloatField(null=True, blank=True,
                               help_text="Score gap between the top two answers (review order breaks ties by it)")
    top_k = models.JSONField(default=list, blank=True)
    regions = models.JSONField(default=list, blank=True)
    overlay = models.CharField(max_length=300, blank=True, default="", help_text="Storage name of the boxes overlay")
    thumbnail = models.CharField(max_length=300, blank=True, default="",
                                 help_text="Storage name of the image's WebP thumbnail (at most 256 px) shown in lists")
    heatmap = models.CharField(max_length=300, blank=True, default="", help_text="Storage name of the heat-map")
    expected_answers = models.JSONField(default=list, blank=True)
    answer_type = models.CharField(max_length=10, blank=True, default="")
    question_type = models.CharField(max_length=60, blank=True, default="")
    vqa_score = models.FloatField(null=True, blank=True)
    params = models.JSONField(default=dict, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = TenantManager()

    class Meta:
        ordering = ["-created_at", "row"]
        constraints = [exactly_one_target("prediction_exactly_one_target")]

    def __str__(self):
        return f"{self.question[:60]} → {self.answer}"


DELETE_BATCH = 2000


def delete_predictions_in(queryset, batch: int | None = None) -> int:
    """Delete the predictions of ``queryset`` a batch at a time; returns how many.

    A plain delete (of the queryset, or of the evaluation, run or project they cascade from) loads every one of
    them as an object first, to set their corrections' link to null: a VQAv2-sized evaluation's 440,000 would
    not fit the web process. Here only ``batch`` of them are loaded at a time."""
    batch = batch or DELETE_BATCH
    deleted = 0
    qs = queryset.order_by("pk")
    while pks := list(qs.values_list("pk", flat=True)[:batch]):
        Prediction.objects.filter(pk__in=pks).delete()
        deleted += len(pks)
    return deleted

