"""The model registry (seeded from gpu_worker's) and fine-tuning runs."""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models

from piggyback.jobs import BackgroundRun
from piggyback.targets import AnswerTarget
from piggyback.tenancy import TenantManager


class PretrainedModel(AnswerTarget, models.Model):
    """A model users can pick: a gpu_worker registry entry plus a hub id or local folder. As an answer target
    it is a zero-shot model."""

    target_type = "model"

    key = models.SlugField(max_length=80, unique=True)
    name = models.CharField(max_length=120)
    family = models.CharField(max_length=30)
    task = models.CharField(max_length=10, choices=[("classify", "Classify"), ("generate", "Generate")])
    registry_key = models.CharField(
        max_length=80, help_text="gpu_worker registry key whose adapter loads this model"
    )
    source = models.CharField(
        max_length=500, blank=True, default="", help_text="Hugging Face hub id or local folder; empty = from scratch"
    )
    description = models.TextField(blank=True, default="")
    enabled = models.BooleanField(default=True)
    zero_shot = models.BooleanField(default=False)
    needs_features = models.BooleanField(default=False)
    can_explain = models.BooleanField(default=True)
    finetune_gpu_memory_gb = models.FloatField(default=0)
    default_params = models.JSONField(default=dict, blank=True)
    available = models.BooleanField(default=False)
    availability_reason = models.CharField(max_length=300, blank=True, default="")
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-available", "family", "key"]

    def __str__(self):
        return self.name

    @property
    def weights_present(self) -> bool:
        """A local folder, or a hub id the registry found available (in the HF cache, or the hub reachable)."""
        source = self.source or ""
        return bool(source) and (Path(source).is_dir() or self.available)

    # ---- AnswerTarget (zero-shot) ----
    @property
    def pretrained(self):
        return self

    def check_can_answer(self) -> None:
        from gpu_worker.errors import Conflict, Unavailable

        if not (self.zero_shot and self.enabled):
            raise Conflict(f"{self.name} cannot answer questions without fine-tuning; train it first.")
        if not self.weights_present:
            raise Unavailable(f"The weights of {self.name} are not on this server "
                              f"({self.availability_reason or 'not downloaded'}).")

    def model_folder(self) -> str:
        return self.source or ""


class TrainingRun(AnswerTarget, BackgroundRun):
    JOB_PREFIX = "train"
    QUEUE = "gpu"
    TENANT_PATH = "project"

    project = models.ForeignKey("piggyback.Project", on_delete=models.CASCADE, related_name="training_runs")
    dataset = models.ForeignKey("datasets_app.Dataset", on_delete=models.PROTECT, related_name="training_runs")
    model = models.ForeignKey(PretrainedModel, on_delete=models.PROTECT, related_name="runs")
    name = models.CharField(max_length=120, blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    preset = models.CharField(max_length=20, blank=True, default="")
    params = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="loss curve, val accuracy, ...")
    vqa_accuracy = models.FloatField(null=True, blank=True)
    device = models.CharField(max_length=60, blank=True, default="")
    log = models.TextField(blank=True, default="")
    output_dir = models.CharField(max_length=300, blank=True, default="", help_text="Storage prefix of outputs")
    rerun_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                 help_text="The run whose model and settings this one repeats (re-run, train again)")

    objects = TenantManager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return self.name or f"Run {self.pk}"

    # ---- AnswerTarget (fine-tuned) ----
    target_type = "training_run"

    @property
    def pretrained(self):
        return self.model

    @property
    def trained_on_dataset_id(self) -> int | None:
        return self.dataset_id

    def check_can_answer(self) -> None:
        from gpu_worker.errors import Conflict

        if self.status != "succeeded":
            raise Conflict(f"“{self}” has not finished training yet; you can ask it questions once it has succeeded.")

    def model_folder(self) -> str:
        """A local copy of the run's ``model/`` folder (storage prefix ``<output_dir>/model``)."""
        from gpu_worker.errors import Conflict, Unavailable
        from piggyback.files import local_dir

        if self.status != "succeeded" or not self.output_dir:
            raise Conflict(f"“{self}” has no trained model yet (it is {self.get_status_display().lower()}).")
        prefix = self.output_dir.rstrip("/")
        if not prefix.endswith("/model"):
            prefix = f"{prefix}/model"
        folder = local_dir(prefix, max_age=300)  # a succeeded run's model files never change
        if not (folder / "config.json").is_file():
            raise Unavailable(f"The trained model of “{self}” is missing from storage; train it again.")
        return str(folder)
