from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from evaluation_app.models import Evaluation, Prediction
from gpu_worker.models.registry import GEN_LIMITS, TOP_K_LIMITS


def file_url(request, prediction, which: str) -> str | None:
    """Permission-checked URL of a prediction's image / overlay / heat-map (None when there is none)."""
    name = {"image": prediction.image, "overlay": prediction.overlay, "heatmap": prediction.heatmap}[which]
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
    overlay = serializers.SerializerMethodField()
    heatmap = serializers.SerializerMethodField()
    model_name = serializers.SerializerMethodField()

    class Meta:
        model = Prediction
        fields = ["id", "kind", "project", "evaluation", "training_run", "model", "model_name", "row", "question",
                  "answer", "confidence", "top_k", "regions", "image", "image_original_name", "overlay", "heatmap",
                  "expected_answers", "answer_type", "question_type", "vqa_score", "params", "latency_ms",
                  "created_at"]
        read_only_fields = fields

    def _url(self, obj, which):
        return file_url(self.context.get("request"), obj, which)

    def get_image(self, obj) -> str | None:
        return self._url(obj, "image")

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


class EvaluationCreateSerializer(serializers.Serializer):
    project = serializers.IntegerField()
    training_run = serializers.IntegerField(required=False, help_text="A succeeded training run of the project")
    model = serializers.CharField(required=False, help_text="Key of a zero-shot model (instead of training_run)")
    images = serializers.FileField(help_text="ZIP of images")
    questions = serializers.FileField(help_text="CSV like the training upload (image, question, optional answer)")
    name = serializers.CharField(required=False, max_length=120, allow_blank=True)
    top_k = serializers.IntegerField(required=False, min_value=_TOPK["min"], max_value=_TOPK["max"])
    num_beams = serializers.IntegerField(required=False, min_value=_BEAMS["min"], max_value=_BEAMS["max"])
    max_new_tokens = serializers.IntegerField(required=False, min_value=_TOKENS["min"], max_value=_TOKENS["max"])

    def validate(self, attrs):
        if bool(attrs.get("training_run")) == bool(attrs.get("model")):
            raise serializers.ValidationError("Give either training_run or model (a zero-shot model key).")
        return attrs


class EvaluationSerializer(serializers.ModelSerializer):
    predictions_csv = serializers.SerializerMethodField()
    annotated_zip = serializers.SerializerMethodField()
    model_name = serializers.SerializerMethodField()

    class Meta:
        model = Evaluation
        fields = ["id", "name", "project", "training_run", "model", "model_name", "status", "progress", "stage",
                  "error", "counts", "warnings", "metrics", "params", "created_at", "started_at", "finished_at",
                  "predictions_csv", "annotated_zip"]
        read_only_fields = fields

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
