"""/api/v1/models/ and /api/v1/training-runs/ (start, status + live metrics, cancel, resume, re-run, export)."""
from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from audit import trail as audit
from datasets_app.models import Dataset
from piggyback import files, filters
from piggyback.api import TenantViewSetMixin
from piggyback.tenancy import get_for_user
from training_app import services
from training_app.models import PretrainedModel, TrainingRun
from training_app.serializers import (
    PretrainedModelSerializer,
    RetrainSerializer,
    TrainingRunDetailSerializer,
    TrainingRunSerializer,
    TrainingRunStartSerializer,
)

RESERVED = {"dataset", "model", "preset", "params", "name"}


@extend_schema_view(
    list=extend_schema(summary="Models you can fine-tune or ask (enabled ones; `available` says if usable here)"),
    retrieve=extend_schema(summary="One model of the registry"),
)
class PretrainedModelViewSet(viewsets.ReadOnlyModelViewSet):
    permission_classes = [IsAuthenticated]
    serializer_class = PretrainedModelSerializer
    lookup_field = "key"
    queryset = PretrainedModel.objects.filter(enabled=True).order_by("-available", "family", "key")
    pagination_class = None


@extend_schema_view(
    list=extend_schema(summary="Training runs in your projects"),
    retrieve=extend_schema(summary="Status, progress, stage, live metrics (loss curve, validation accuracy), error"),
)
class TrainingRunViewSet(TenantViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                         viewsets.GenericViewSet):
    queryset = TrainingRun.objects.all().order_by("-created_at")
    serializer_class = TrainingRunSerializer
    filterset_class = filters.ProjectFilter
    role_by_action = {"export": "viewer", "model_card": "viewer", "retrain": "editor"}
    throttle_scopes = {"create": "job", "resume": "job", "rerun": "job", "retrain": "job"}  # piggyback/throttling.py

    def get_queryset(self):
        return TrainingRun.objects.for_user(self.request.user).select_related("model", "dataset").order_by("-created_at")

    def get_serializer_class(self):
        return TrainingRunDetailSerializer if self.action == "retrieve" else TrainingRunSerializer

    @extend_schema(
        summary="Start fine-tuning a model on a dataset",
        request=TrainingRunStartSerializer,
        responses={202: TrainingRunSerializer, 400: OpenApiResponse(description="per-field errors"),
                   403: OpenApiResponse(description="needs the editor role")},
    )
    def create(self, request):
        ser = TrainingRunStartSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = ser.validated_data
        dataset = get_for_user(Dataset, request.user, "editor", pk=data["dataset"])
        params = dict(data.get("params") or {})
        params.update({k: v for k, v in request.data.items() if k not in RESERVED})
        run = services.start_run(request.user, dataset, data["model"], params=params or None,
                                 preset=data.get("preset") or None, name=data.get("name", ""))
        run.refresh_from_db()
        return Response(TrainingRunSerializer(run, context={"request": request}).data, status=status.HTTP_202_ACCEPTED)

    def _act(self, request, fn, code=status.HTTP_200_OK):
        out = fn(request.user, self.get_object())
        out.refresh_from_db()
        return Response(TrainingRunSerializer(out, context={"request": request}).data, status=code)

    @extend_schema(summary="Cancel (queued: at once; running: at the next step, after a checkpoint)",
                   request=None, responses={200: TrainingRunSerializer, 409: OpenApiResponse(description="already finished")})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        return self._act(request, services.cancel_run)

    @extend_schema(summary="Resume a failed or cancelled run from its last checkpoint (same run)",
                   request=None, responses={202: TrainingRunSerializer, 409: OpenApiResponse(description="not resumable")})
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        return self._act(request, services.resume_run, status.HTTP_202_ACCEPTED)

    @extend_schema(summary="Start a new run with the same dataset, model and settings",
                   request=None, responses={202: TrainingRunSerializer, 400: OpenApiResponse(description="cannot start")})
    @action(detail=True, methods=["post"])
    def rerun(self, request, pk=None):
        return self._act(request, services.rerun, status.HTTP_202_ACCEPTED)

    @extend_schema(summary="Download the fine-tuned model (from_pretrained folder) + metrics.json + train.log as a ZIP",
                   responses={(200, "application/zip"): OpenApiTypes.BINARY,
                              409: OpenApiResponse(description="run not finished"),
                              507: OpenApiResponse(description="not enough disk space to build the ZIP")})
    @action(detail=True, methods=["get"])
    def export(self, request, pk=None):
        run = self.get_object()
        name = services.export_zip(run)
        audit.record(audit.A.MODEL_EXPORTED, project=run.project, target=run, details={"model": run.model.key})
        return files.serve_file(name, download_name=f"piggyback-run-{run.pk}-{run.model.key}.zip", as_attachment=True)


    @extend_schema(summary="Train again: the same model and settings on a newer version of the dataset",
                   request=RetrainSerializer,
                   responses={202: TrainingRunSerializer,
                              400: OpenApiResponse(description="no newer version, another project's dataset, "
                                                               "dataset not ready")})
    @action(detail=True, methods=["post"])
    def retrain(self, request, pk=None):
        run = self.get_object()
        ser = RetrainSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        dataset = None
        if ser.validated_data.get("dataset") is not None:
            dataset = Dataset.objects.filter(project_id=run.project_id, pk=ser.validated_data["dataset"]).first()
            if dataset is None:
                raise ValidationError({"dataset": f"Dataset {ser.validated_data['dataset']} is not a dataset of this "
                                                  "run's project."})
        new = services.retrain(request.user, run, dataset)  # TrainingError: 400 through the exception handler
        new.refresh_from_db()
        return Response(TrainingRunSerializer(new, context={"request": request}).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(summary="The model card (README.md, Hugging Face model-card format)",
                   responses={(200, "text/markdown"): OpenApiTypes.STR})
    @action(detail=True, methods=["get"], url_path="model-card")
    def model_card(self, request, pk=None):
        from training_app.model_card import model_card

        run = self.get_object()
        response = HttpResponse(model_card(run), content_type="text/markdown; charset=utf-8")
        response["Content-Disposition"] = f'inline; filename="run-{run.pk}-README.md"'
        return response
