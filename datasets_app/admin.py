from django.contrib import admin
from django.db.models import Q

from datasets_app.models import Correction, Dataset, DatasetItem, DroppedRow
from datasets_app.services import delete_dataset
from piggyback.admin_base import RUN_LIST, BackgroundRunAdmin, CountedDeletionAdmin


@admin.register(Dataset)
class DatasetAdmin(CountedDeletionAdmin, BackgroundRunAdmin):
    list_display = ("name", "version", "project", "format") + RUN_LIST
    list_filter = ("status", "format", "level", "created_at")
    search_fields = ("name", "project__name", "questions_original_name", "images_original_name")
    raw_id_fields = ("project", "created_by", "parent", "root")

    # Deleting: counts per kind on the confirmation page (a big dataset has ~1M rows), what blocks it listed as
    # protected, then delete_dataset (stored files removed after the commit) instead of the ORM cascade.
    def deletion_parts(self, dataset):
        from evaluation_app.models import Evaluation
        from training_app.models import TrainingRun

        yield DatasetItem, dataset.items.all()
        yield DroppedRow, dataset.dropped.all()
        yield Correction, dataset.corrections.all()
        yield TrainingRun, dataset.training_runs.all(), True
        yield Dataset, Dataset.objects.filter(Q(parent=dataset) | Q(root=dataset)), True
        yield Evaluation, dataset.evaluations.all(), True

    def delete_with(self, dataset):
        delete_dataset(dataset)


@admin.register(DatasetItem)
class DatasetItemAdmin(admin.ModelAdmin):
    list_display = ("question", "dataset", "row", "answer_type", "question_type")
    list_filter = ("answer_type",)
    search_fields = ("question", "image_original_name", "dataset__name")
    raw_id_fields = ("dataset",)
    list_select_related = ("dataset",)


@admin.register(DroppedRow)
class DroppedRowAdmin(admin.ModelAdmin):
    list_display = ("dataset", "row", "image", "reason_code", "reason")
    list_filter = ("reason_code",)
    search_fields = ("reason", "image", "question", "dataset__name")
    raw_id_fields = ("dataset",)


@admin.register(Correction)
class CorrectionAdmin(admin.ModelAdmin):
    list_display = ("question", "answer", "accepted", "dataset", "applied_in", "created_by", "created_at")
    list_filter = ("accepted", "created_at")
    search_fields = ("question", "answer", "image_original_name", "dataset__name")
    raw_id_fields = ("dataset", "prediction", "applied_in", "created_by")
    list_select_related = ("dataset", "applied_in", "created_by")
