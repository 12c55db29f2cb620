from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from evaluation_app.models import Evaluation, Prediction
from gpu_worker.models.registry import GEN_LIMITS, TOP_K_LIMITS
from piggyback.filters import IdField
from piggyback.jobs import queue_position


def file_url(request, prediction, which: str) -> str | None:
    """Permission-checked URL of a prediction's image / thumbnail / overlay / heat-map (None when there is none)."""
    name = {"image": prediction.image, "thumbnail": prediction.thumbnail or prediction.image,  # made on first GET
            "overlay": prediction.overlay, "heatmap": prediction.heatmap}[which]
    if not name:
        return None
    url = reverse("api-prediction-file", args=[prediction.pk, which])
    return request.build_absolute_uri(url) if request is not None else url


# one set of generation limits (gpu_worker.models.registry), the same as the pages and the worker
_TOPK, _BEAMS, _TOKENS = TOP_K_LIMITS, GEN_LIMITS["num_beams"], GEN_LIMITS["max_new_tokens"]


class ScoredAnswerSerializer(serializers.Serializer):
    answer = serializers.CharField()
    score = serializers.FloatField()


class RegionSerializer(serializers.Serializer):
    box = serializers.ListField(child=serializers.FloatField(), min_length=4, max_length=4,
                                help_text="[x0, y0, x1, y1] in the image's pixels")
    score = serializers.FloatField()


class PredictionSerializer(serializers.ModelSerializer):
    top_k = ScoredAnswerSerializer(many=True, read_only=True)
    regions = RegionSerializer(many=True, read_only=True)
    image = serializers.SerializerMethodField()
    thumbnail = serializers.SerializerMethodField(help_text="WebP, at most 256 px: for lists")
    overlay = serializers.SerializerMethodField()
    heatmap = serializers.SerializerMethodField()
    model_name = serializers.SerializerMethodField()

    class Meta:
        model = Prediction
        fields = ["id", "kind", "project", "evaluation", "training_run", "model", "model_name", "row", "question",
                  "answer", "confidence", "top_k", "regions", "image", "thumbnail", "image_original_name", "overlay",
                  "heatmap", "expected_answers", "answer_type", "question_type", "vqa_score", "params", "latency_ms",
                  "created_at"]
        read_only_fields = fields

    def _url(self, obj, which):
        return file_url(self.context.get("request"), obj, which)

    def get_image(self, obj) -> str | None:
        return self._url(obj, "image")

    def get_thumbnail(self, obj) -> str | None:
        return self._url(obj, "thumbnail")

    def get_overlay(self, obj) -> str | None:
        return self._url(obj, "overlay")

    def get_heatmap(self, obj) -> str | None:
        return self._url(obj, "heatmap")

    def get_model_name(self, obj) -> str:
        if obj.training_run_id:
            return str(obj.training_run)
        return str(obj.model) if obj.model_id else ""


class PredictRequestSerializer(serializers.Serializer):
    image = serializers.FileField(help_text="PNG / JPEG / WebP image, at most 20 MB")
    question = serializers.CharField(max_length=500)
    top_k = serializers.IntegerField(required=False, min_value=_TOPK["min"], max_value=_TOPK["max"],
                                     default=_TOPK["default"])
    num_beams = serializers.IntegerField(required=False, min_value=_BEAMS["min"], max_value=_BEAMS["max"],
                                         help_text="Generative models only (BLIP, BLIP-2, Florence-2)")
    max_new_tokens = serializers.IntegerField(required=False, min_value=_TOKENS["min"], max_value=_TOKENS["max"],
                                              help_text="Generative models only")


MAX_ID = 2**31 - 1


class EvaluationCreateSerializer(serializers.Serializer):
    project = IdField()
    training_run = IdField(required=False, help_text="A succeeded training run of the project")
    model = serializers.CharField(required=False, max_length=80,
                                  help_text="Key of a zero-shot model (instead of training_run)")
    dataset = IdField(required=False, help_text="A ready dataset of the project to evaluate on (instead of images + "
                                                "questions)")
    images = serializers.FileField(required=False, help_text="ZIP of images (with questions, instead of dataset)")
    questions = serializers.FileField(required=False,
                                      help_text="CSV like the training upload (image, question, optional answer)")
    name = serializers.CharField(required=False, max_length=120, allow_blank=True)
    top_k = serializers.IntegerField(required=False, min_value=_TOPK["min"], max_value=_TOPK["max"])
    num_beams = serializers.IntegerField(required=False, min_value=_BEAMS["min"], max_value=_BEAMS["max"])
    max_new_tokens = serializers.IntegerField(required=False, min_value=_TOKENS["min"], max_value=_TOKENS["max"])

    def validate(self, attrs):
        if bool(attrs.get("training_run")) == bool(attrs.get("model")):
            raise serializers.ValidationError("Give either training_run or model (a zero-shot model key).")
        uploads = [k for k in ("images", "questions") if attrs.get(k) is not None]
        if attrs.get("dataset") is not None:
            if uploads:
                raise serializers.ValidationError(
                    {"dataset": "Give either dataset or images + questions, not both."})
        elif len(uploads) < 2:
            missing = " and ".join(k for k in ("images", "questions") if k not in uploads)
            raise serializers.ValidationError(
                {missing.split(" ")[0]: f"Give dataset=<id> (a ready dataset of the project), or upload {missing}."})
        return attrs


class EvaluationSerializer(serializers.ModelSerializer):
    predictions_csv = serializers.SerializerMethodField()
    annotated_zip = serializers.SerializerMethodField()
    model_name = serializers.SerializerMethodField()
    queue_position = serializers.SerializerMethodField(
        help_text="While queued: how many runs start before this one (0 = next); else null.")

    class Meta:
        model = Evaluation
        fields = ["id", "name", "project", "training_run", "model", "model_name", "dataset", "status", "queue_position", "progress", "stage",
                  "error", "counts", "warnings", "metrics", "ece", "params", "created_at", "started_at", "finished_at",
                  "predictions_csv", "annotated_zip"]
        read_only_fields = fields

    def get_queue_position(self, obj) -> int | None:
        return queue_position(obj)

    def _download(self, obj, name) -> str | None:
        if obj.status != "succeeded":
            return None
        url = reverse(f"api-evaluation-{name}", args=[obj.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request else url

    def get_predictions_csv(self, obj) -> str | None:
        return self._download(obj, "csv")

    def get_annotated_zip(self, obj) -> str | None:
        return self._download(obj, "zip")

    def get_model_name(self, obj) -> str:
        return str(obj.training_run or obj.model or "")


class ReviewItemSerializer(serializers.ModelSerializer):
    """One prediction of a review queue: ``image_name`` is the image's file name as uploaded."""

    image_name = serializers.SerializerMethodField()
    image = serializers.SerializerMethodField()
    top_k = ScoredAnswerSerializer(many=True, read_only=True)
    correction = serializers.SerializerMethodField()

    class Meta:
        model = Prediction
        fields = ["id", "question", "answer", "confidence", "margin", "image_name", "image", "top_k",
                  "expected_answers", "vqa_score", "answer_type", "question_type", "row", "correction"]
        read_only_fields = fields

    def get_image_name(self, obj) -> str:
        from pathlib import PurePosixPath

        return obj.image_original_name or PurePosixPath(obj.image or "").name

    def get_image(self, obj) -> str | None:
        return file_url(self.context.get("request"), obj, "image")

    def get_correction(self, obj) -> dict | None:
        found = getattr(obj, "_corrections", None)
        if found is None:
            found = list(obj.corrections.order_by("-created_at", "-pk")[:1])
        if not found:
            return None
        latest = found[0]
        return {"id": latest.pk, "answer": latest.answer, "accepted": latest.accepted, "dataset": latest.dataset_id,
                "pending": latest.applied_in_id is None}


class CorrectionRequestSerializer(serializers.Serializer):
    answer = serializers.CharField(required=False, allow_blank=True, max_length=300,
                                   help_text="The right answer (normalised like the uploads, filled to ten)")
    accept = serializers.BooleanField(required=False, default=False,
                                      help_text="Confirm the model's own answer (instead of typing one)")
    dataset = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID,
                                       help_text="Dataset of the project the correction is for (default: the one "
                                                 "the prediction's run was trained on; required for zero-shot)")

    def validate(self, attrs):
        if not attrs.get("accept") and not (attrs.get("answer") or "").strip():
            raise serializers.ValidationError({"answer": "Type the right answer, or send \"accept\": true."})
        return attrs


class CorrectionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    prediction = serializers.IntegerField(source="prediction_id", allow_null=True)
    dataset = serializers.IntegerField(source="dataset_id")
    image_name = serializers.CharField(source="image_original_name")
    question = serializers.CharField()
    answer = serializers.CharField()
    accepted = serializers.BooleanField()
    pending = serializers.SerializerMethodField()
    applied_in = serializers.IntegerField(source="applied_in_id", allow_null=True)
    created_at = serializers.DateTimeField()

    def get_pending(self, obj) -> bool:
        return obj.applied_in_id is None


class LeaderboardTargetSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["training_run", "model"])
    id = serializers.IntegerField(help_text="Training run id, or the zero-shot model's id")
    name = serializers.CharField()
    key = serializers.CharField(help_text="The zero-shot model's key (empty for a training run)")


class LeaderboardRowSerializer(serializers.Serializer):
    target = LeaderboardTargetSerializer()
    evaluation = serializers.IntegerField()
    vqa_accuracy = serializers.FloatField(allow_null=True)
    exact_match = serializers.FloatField(allow_null=True)
    per_answer_type = serializers.DictField(child=serializers.FloatField())
    per_question_type = serializers.DictField(child=serializers.FloatField())
    ece = serializers.FloatField(allow_null=True)
    questions_per_second = serializers.FloatField(allow_null=True)
    training_seconds = serializers.FloatField(allow_null=True)
    model_parameters = serializers.IntegerField(allow_null=True)
    base_model = serializers.CharField()
    count = serializers.IntegerField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
