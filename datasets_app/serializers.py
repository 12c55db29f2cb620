"""API shapes for datasets, their items, dropped rows and exploration stats."""
from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from datasets_app.charts import main_answer
from datasets_app.models import Dataset, DatasetItem, DroppedRow
from piggyback.filters import IdField


class DatasetSerializer(serializers.ModelSerializer):
    project_name = serializers.CharField(source="project.name", read_only=True)
    message = serializers.SerializerMethodField(help_text="The state in plain words, for people.")
    detail_url = serializers.SerializerMethodField()
    pending_corrections = serializers.SerializerMethodField()

    class Meta:
        model = Dataset
        fields = [
            "id", "project", "project_name", "name", "format", "status", "progress", "stage", "error",
            "message", "counts", "level", "warnings", "has_answers", "images_original_name",
            "questions_original_name", "attempts", "created_at", "started_at", "finished_at", "detail_url",
            "version", "parent", "root", "pending_corrections",
        ]
        read_only_fields = fields

    def get_pending_corrections(self, obj) -> int:
        """Corrections waiting to go into the next version of this dataset."""
        return obj.corrections.filter(applied_in__isnull=True).count()

    def get_message(self, obj) -> str:
        c = obj.counts or {}
        if obj.status == "succeeded":
            text = f"Your dataset is ready: {c.get('images_kept', 0):,} images, {c.get('rows_kept', 0):,} questions."
            dropped = c.get("rows_dropped", 0) + c.get("images_dropped", 0)
            if dropped:
                text += f" {c.get('rows_dropped', 0):,} rows and {c.get('images_dropped', 0):,} images were removed; see the cleaning report."
            return text
        if obj.status == "failed":
            return f"The dataset could not be used: {obj.error}"
        if obj.status == "cancelled":
            return "The cleaning was cancelled. Press Retry to run it again."
        if obj.status == "running":
            return f"Checking your files: {obj.stage or 'working'} ({round(obj.progress * 100)}%)."
        return "Waiting for a free worker to check your files."

    def get_detail_url(self, obj) -> str:
        return reverse("datasets:detail", args=[obj.pk])


class DatasetCreateSerializer(serializers.Serializer):
    """Multipart upload: an images ZIP plus a questions file (and VQAv2 annotations when separate)."""

    project = IdField(help_text="Project id (you need the editor role).")
    name = serializers.CharField(max_length=120, required=False, allow_blank=True)
    images = serializers.FileField(required=False, allow_null=True,
                                   help_text="ZIP archive of the images (PNG, JPEG, ...).")
    questions = serializers.FileField(
        required=False, allow_null=True,
        help_text="CSV (image, question, answer|answers|answer_1..answer_10), Excel .xlsx, VQAv2 questions "
                  "JSON, or a JSON list / JSON Lines of {image, question, answer(s)}.")
    annotations = serializers.FileField(required=False, allow_null=True,
                                        help_text="VQAv2 annotations JSON (optional).")
    images_upload = serializers.CharField(required=False, allow_blank=True, max_length=300,
                                          help_text="Instead of images: a finished resumable upload "
                                                    "(last segment of its /api/v1/uploads/ Location).")
    questions_upload = serializers.CharField(required=False, allow_blank=True, max_length=300,
                                             help_text="Instead of questions: a finished resumable upload.")
    annotations_upload = serializers.CharField(required=False, allow_blank=True, max_length=300,
                                               help_text="Instead of annotations: a finished resumable upload.")

    def validate(self, attrs):
        for field, required in (("images", True), ("questions", True), ("annotations", False)):
            given = [k for k in (field, f"{field}_upload") if attrs.get(k)]
            if len(given) > 1:
                raise serializers.ValidationError(
                    {f"{field}_upload": f"Send either '{field}' or '{field}_upload', not both."})
            if required and not given:
                raise serializers.ValidationError({field: f"Send the file as '{field}', or a finished "
                                                          f"resumable upload as '{field}_upload'."})
        return attrs


class DatasetCreatedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    format = serializers.CharField()
    url = serializers.CharField()


class DatasetItemSerializer(serializers.ModelSerializer):
    answer = serializers.SerializerMethodField(help_text="Most frequent of the ten answers.")
    image_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField(help_text="256 px WebP for lists.")

    class Meta:
        model = DatasetItem
        fields = [
            "id", "row", "image_url", "thumbnail_url", "image_original_name", "image_width", "image_height", "question",
            "answer", "answers", "original_answers", "answer_type", "question_type",
        ]
        read_only_fields = fields

    def get_answer(self, obj) -> str:
        return main_answer(obj.answers)

    def get_image_url(self, obj) -> str:
        return reverse("datasets:item_image", args=[obj.pk])

    def get_thumbnail_url(self, obj) -> str:
        return reverse("datasets:item_thumbnail", args=[obj.pk])


class DroppedRowSerializer(serializers.ModelSerializer):
    class Meta:
        model = DroppedRow
        fields = ["id", "row", "image", "question", "reason_code", "reason"]
        read_only_fields = fields
