from django.contrib import admin

from evaluation_app.models import Evaluation, Prediction
from piggyback.admin_base import RUN_LIST, BackgroundRunAdmin


@admin.register(Evaluation)
class EvaluationAdmin(BackgroundRunAdmin):
    list_display = ("__str__", "project", "training_run", "model") + RUN_LIST
    search_fields = ("name", "project__name")
    raw_id_fields = ("project", "training_run", "created_by")


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ("question", "answer", "confidence", "kind", "project", "user", "created_at")
    list_filter = ("kind", "answer_type", "created_at")
    search_fields = ("question", "answer", "image_original_name", "project__name")
    raw_id_fields = ("project", "evaluation", "training_run", "user")
