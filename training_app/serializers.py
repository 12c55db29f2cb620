"""API shapes of models (the registry) and training runs."""
from __future__ import annotations

from rest_framework import serializers

from piggyback.filters import IdField
from piggyback.jobs import queue_position
from training_app.models import PretrainedModel, TrainingRun


class PretrainedModelSerializer(serializers.ModelSerializer):
    default = serializers.SerializerMethodField(help_text="The model a run uses when none is chosen.")

    class Meta:
        model = PretrainedModel
        fields = ["key", "name", "family", "task", "description", "available", "availability_reason", "enabled",
                  "zero_shot", "needs_features", "can_explain", "finetune_gpu_memory_gb", "default_params", "default"]
        read_only_fields = fields

    def get_default(self, obj) -> bool:
        from gpu_worker.models.registry import DEFAULT_MODEL_KEY

        return obj.key == DEFAULT_MODEL_KEY


class TrainingRunStartSerializer(serializers.Serializer):
    """POST body: ``dataset`` id, ``model`` key, optional ``preset``, ``params`` and/or flat hyper-parameters
    (``epochs``, ``learning_rate``, ``batch_size``, ...: any key besides these four is a hyper-parameter)."""

    dataset = IdField()
    model = serializers.CharField(max_length=100, help_text="Model key from /api/v1/models/, e.g. baseline-rnn")
    preset = serializers.ChoiceField(choices=["quick", "balanced", "thorough"], required=False, allow_blank=True)
    params = serializers.DictField(required=False, help_text="Hyper-parameters, e.g. {\"epochs\": 3}")
    name = serializers.CharField(required=False, allow_blank=True, max_length=120)


class TrainingRunSerializer(serializers.ModelSerializer):
    dataset_name = serializers.CharField(source="dataset.name", read_only=True)
    dataset_version = serializers.IntegerField(source="dataset.version", read_only=True,
                                               help_text="The version of the dataset this run trained on")
    model = serializers.CharField(source="model.key", read_only=True)
    model_name = serializers.CharField(source="model.name", read_only=True)
    duration_seconds = serializers.SerializerMethodField()
    traceback = serializers.SerializerMethodField()
    warnings = serializers.SerializerMethodField()
    urls = serializers.SerializerMethodField()
    queue_position = serializers.SerializerMethodField(
        help_text="While queued: how many runs start before this one (0 = next); else null.")

    class Meta:
        model = TrainingRun
        fields = ["id", "name", "project", "dataset", "dataset_name", "dataset_version", "model", "model_name", "status", "queue_position", "progress",
                  "stage", "error", "traceback", "preset", "params", "metrics", "vqa_accuracy", "device",
                  "attempts", "rerun_of", "warnings", "created_at", "started_at", "finished_at",
                  "duration_seconds", "urls"]
        read_only_fields = fields

    def get_queue_position(self, obj) -> int | None:
        return queue_position(obj)

    def get_duration_seconds(self, obj) -> float | None:
        d = obj.duration
        return round(d.total_seconds(), 1) if d is not None else None

    def get_traceback(self, obj) -> str:
        request = self.context.get("request")
        return obj.traceback if request is not None and request.user.is_staff else ""

    def get_warnings(self, obj) -> list[str]:
        return list((obj.metrics or {}).get("warnings") or [])

    def get_urls(self, obj) -> dict:
        return {
            "page": f"/training/runs/{obj.pk}/",
            "evaluation": f"/evaluate/runs/{obj.pk}/",
            "export": f"/api/v1/training-runs/{obj.pk}/export/" if obj.status == "succeeded" else None,
            "model_card": f"/api/v1/training-runs/{obj.pk}/model-card/",
        }


class TrainingRunDetailSerializer(TrainingRunSerializer):
    class Meta(TrainingRunSerializer.Meta):
        fields = TrainingRunSerializer.Meta.fields + ["log"]
        read_only_fields = fields


class RetrainSerializer(serializers.Serializer):
    dataset = serializers.IntegerField(required=False, min_value=1, max_value=2**31 - 1,
                                       help_text="Dataset (version) of the run's project; default: the newest ready "
                                                 "version above the one the run trained on")
