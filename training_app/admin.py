from django.contrib import admin

from piggyback.admin_base import RUN_LIST, BackgroundRunAdmin
from training_app.models import PretrainedModel, TrainingRun


@admin.register(PretrainedModel)
class PretrainedModelAdmin(admin.ModelAdmin):
    list_display = ("key", "name", "family", "task", "source", "enabled", "available", "zero_shot")
    list_filter = ("family", "task", "enabled", "available", "zero_shot")
    search_fields = ("key", "name", "source", "description")
    list_editable = ("enabled",)
    readonly_fields = ("available", "availability_reason", "checked_at")


@admin.register(TrainingRun)
class TrainingRunAdmin(BackgroundRunAdmin):
    list_display = ("__str__", "project", "dataset", "model", "vqa_accuracy") + RUN_LIST
    list_filter = ("status", "model__family", "created_at")
    search_fields = ("name", "project__name", "dataset__name", "model__key")
    raw_id_fields = ("project", "dataset", "created_by", "rerun_of")
