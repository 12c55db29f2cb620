"""Evaluation API: predict one question (fine-tuned run or zero-shot model), batch evaluations with their
downloads, the user's question history, and permission-checked overlay / image files."""
from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from audit import trail as audit
from evaluation_app import services
from evaluation_app.models import Evaluation, Prediction
from evaluation_app.serializers import (
    MAX_ID,
    CorrectionRequestSerializer,
    CorrectionSerializer,
    EvaluationCreateSerializer,
    EvaluationSerializer,
    LeaderboardRowSerializer,
    PredictionSerializer,
    PredictRequestSerializer,
    ReviewItemSerializer,
)
from gpu_worker.errors import Conflict
from piggyback import filters
from piggyback.api import TenantViewSetMixin
from piggyback.files import serve_file
from piggyback.models import Project
from piggyback.tenancy import get_for_user, require_role


def filter_predictions(qs, params):
    """Pages: ``q`` searches question and answer; ``wrong=1`` keeps answers that scored below 1 (the API
    validates the same parameters with ``piggyback.filters.PredictionFilter``)."""
    qs = filters.search_predictions(qs, params.get("q") or "")
    if params.get("wrong") in ("1", "true", "yes", "on"):
        qs = qs.filter(vqa_score__lt=1)
    return qs


def _project_dataset(project, pk: int):
    """A dataset of ``project`` (400 naming the problem otherwise: another project's or unknown id)."""
    from datasets_app.models import Dataset

    dataset = Dataset.objects.filter(project=project, pk=pk).first()
    if dataset is None:
        raise ValidationError({"dataset": f"Dataset {pk} is not a dataset of the project “{project.name}”."})
    if dataset.status != "succeeded":
        raise ValidationError({"dataset": f"The dataset “{dataset}” is not ready (its cleaning is {dataset.status}); "
                                          "evaluate on a ready dataset."})
    return dataset


class _PredictBase(APIView):
    parser_classes = [MultiPartParser, FormParser]
    throttle_scope = "predict"  # piggyback/throttling.py

    def _answer(self, request, project, target):
        data = PredictRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        require_role(request.user, project, "editor")
        params = services.clamp_params(target, data.validated_data)
        prediction = services.predict_uploaded(request.user, project, target, uploaded=data.validated_data["image"],
                                               question=data.validated_data["question"], params=params)
        return Response(PredictionSerializer(prediction, context={"request": request}).data,
                        status=status.HTTP_201_CREATED)


class RunPredictView(_PredictBase):
    """Ask a fine-tuned model one question about an uploaded image."""

    @extend_schema(
        operation_id="training_runs_predict",
        request={"multipart/form-data": PredictRequestSerializer},
        responses={201: PredictionSerializer, 400: OpenApiResponse(description="Bad image or question"),
                   403: OpenApiResponse(description="Viewers cannot ask"), 404: OpenApiResponse(description="Not yours"),
                   409: OpenApiResponse(description="The run has not succeeded")},
        tags=["evaluation"],
    )
    def post(self, request, pk):
        from training_app.models import TrainingRun

        run = get_for_user(TrainingRun.objects.select_related("model", "project"), request.user, pk=pk)
        return self._answer(request, run.project, run)


class ModelPredictView(_PredictBase):
    """Ask a zero-shot model (BLIP, BLIP-2, Florence-2, ViLT-VQA) one question, within a project."""

    @extend_schema(
        operation_id="models_predict",
        parameters=[OpenApiParameter("project", OpenApiTypes.INT, OpenApiParameter.QUERY, required=True,
                                     description="Project the question and its history belong to")],
        request={"multipart/form-data": PredictRequestSerializer},
        responses={201: PredictionSerializer, 403: OpenApiResponse(description="Viewers cannot ask"),
                   404: OpenApiResponse(description="Unknown model or project"),
                   409: OpenApiResponse(description="Weights not available")},
        tags=["evaluation"],
    )
    def post(self, request, key):
        from training_app.models import PretrainedModel

        model = get_object_or_404(PretrainedModel.objects.filter(zero_shot=True, enabled=True), key=key)
        project_id = filters.id_param(request.query_params.get("project") or request.data.get("project"))
        if project_id is None:
            raise ValidationError({"project": "Give ?project=<id> (the number of one of your projects)."})
        project = get_for_user(Project, request.user, pk=project_id)
        return self._answer(request, project, model)


class EvaluationViewSet(TenantViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                        mixins.CreateModelMixin, viewsets.GenericViewSet):
    """Batch evaluations: upload a ZIP of images + questions CSV (answers optional), follow the progress,
    read the metrics and download the results."""

    queryset = Evaluation.objects.all().order_by("-created_at")
    serializer_class = EvaluationSerializer
    filterset_class = filters.ProjectFilter
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    role_by_action = {"review": "viewer"}
    throttle_scopes = {"create": "job", "retry": "job"}  # piggyback/throttling.py

    def get_queryset(self):
        return super().get_queryset().select_related("training_run", "model")

    @extend_schema(request={"multipart/form-data": EvaluationCreateSerializer,
                            "application/json": EvaluationCreateSerializer},
                   responses={201: EvaluationSerializer, 400: OpenApiResponse(description="Bad input, e.g. a dataset "
                                                                               "of another project or not ready")},
                   tags=["evaluation"])
    def create(self, request, *args, **kwargs):
        from training_app.models import PretrainedModel, TrainingRun

        data = EvaluationCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        project = get_for_user(Project, request.user, pk=v["project"])
        if v.get("training_run"):
            target = TrainingRun.objects.filter(project=project, pk=v["training_run"]).select_related("model").first()
        else:
            target = PretrainedModel.objects.filter(key=v["model"], zero_shot=True, enabled=True).first()
        if target is None:
            raise NotFound("No such training run in this project, or no such zero-shot model.")
        require_role(request.user, project, "editor")
        params = {k: v[k] for k in ("top_k", "num_beams", "max_new_tokens") if k in v}
        if v.get("dataset") is not None:
            dataset = _project_dataset(project, v["dataset"])
            evaluation = services.create_dataset_evaluation(request.user, project, target, dataset, params=params,
                                                            name=v.get("name", ""))
        else:
            evaluation = services.create_evaluation(
                request.user, project, target, images_file=v["images"], questions_file=v["questions"],
                params=params, name=v.get("name", ""))
        return Response(EvaluationSerializer(evaluation, context={"request": request}).data,
                        status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[OpenApiParameter("q", str, description="Search question and answer"),
                    OpenApiParameter("wrong", bool, description="true: only answers that scored below 1")],
        responses=PredictionSerializer(many=True), filters=False, tags=["evaluation"])
    @action(detail=True, methods=["get"])
    def predictions(self, request, pk=None):
        evaluation = self.get_object()
        qs = filters.apply(filters.PredictionFilter, request,
                           evaluation.shown_predictions().select_related("training_run", "model").order_by("row", "pk"))
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(PredictionSerializer(page, many=True, context={"request": request}).data)


    @extend_schema(
        parameters=[OpenApiParameter("pending", bool, description="Only predictions nobody has reviewed yet")],
        responses=ReviewItemSerializer(many=True), tags=["evaluation"],
        summary="Review queue: the predictions the model is least sure of first")
    @action(detail=True, methods=["get"])
    def review(self, request, pk=None):
        """Lowest confidence first; ties broken by the smallest gap between the two best answers."""
        evaluation = self.get_object()
        qs = services.review_queue(evaluation, pending_only=request.query_params.get("pending") in
                                   ("1", "true", "yes", "on"))
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(ReviewItemSerializer(page, many=True, context={"request": request}).data)

    @extend_schema(request=None, responses=EvaluationSerializer, tags=["evaluation"])
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel a queued evaluation at once, or stop a running one after its current step."""
        from piggyback.jobs import cancel

        evaluation = self.get_object()
        cancel(evaluation)
        return Response(EvaluationSerializer(evaluation, context={"request": request}).data)


    @extend_schema(request=None, responses={202: EvaluationSerializer,
                                            409: OpenApiResponse(description="not failed or cancelled")},
                   tags=["evaluation"])
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Run a failed or cancelled evaluation again (its uploaded files are kept)."""
        evaluation = self.get_object()
        services.retry_evaluation(request.user, evaluation)
        evaluation.refresh_from_db()
        return Response(EvaluationSerializer(evaluation, context={"request": request}).data,
                        status=status.HTTP_202_ACCEPTED)


class _EvaluationFileView(APIView):
    filename = ""

    def get(self, request, pk):
        evaluation = get_for_user(Evaluation, request.user, pk=pk)
        if evaluation.status != "succeeded":
            raise Conflict(f"This evaluation has not finished yet (it is {evaluation.status}).")
        stem, ext = self.filename.rsplit(".", 1)
        audit.record(audit.A.EVALUATION_DOWNLOADED, project=evaluation.project, target=evaluation,
                     details={"file": self.filename})
        return serve_file(f"{evaluation.output_dir}/{self.filename}", as_attachment=True,
                          download_name=f"evaluation-{evaluation.pk}-{stem}.{ext}")


class EvaluationCsvView(_EvaluationFileView):
    """Every prediction: image, question, answer, confidence, top-5 (spreadsheet-safe CSV)."""

    filename = "predictions.csv"

    @extend_schema(operation_id="evaluations_predictions_csv", responses={(200, "text/csv"): OpenApiTypes.BINARY},
                   tags=["evaluation"])
    def get(self, request, pk):
        return super().get(request, pk)


class EvaluationZipView(_EvaluationFileView):
    """The annotated images, named by their question, plus the CSV."""

    filename = "annotated.zip"

    @extend_schema(operation_id="evaluations_annotated_zip", responses={(200, "application/zip"): OpenApiTypes.BINARY},
                   tags=["evaluation"])
    def get(self, request, pk):
        return super().get(request, pk)


class PredictionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Your question history (single and sample predictions), newest first."""

    serializer_class = PredictionSerializer
    filterset_class = filters.HistoryFilter
    queryset = Prediction.objects.none()

    def get_queryset(self):
        return (Prediction.objects.for_user(self.request.user).filter(user=self.request.user)
                .exclude(kind=Prediction.Kind.BATCH).select_related("training_run", "model").order_by("-created_at", "-pk"))

    def filter_queryset(self, queryset):
        return super().filter_queryset(queryset) if self.action == "list" else queryset

    @extend_schema(tags=["evaluation"])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)


class PredictionFileView(APIView):
    """A prediction's stored image, its thumbnail (WebP, at most 256 px, for lists), boxes overlay or heat-map:
    a batch prediction's files for the members of its project, a single / sample prediction's files for the
    member who asked (404 for everyone else, like ``GET /predictions/{id}/``). An overlay not drawn yet is
    drawn and stored on this first request; so is the thumbnail of a prediction stored before thumbnails."""

    @extend_schema(operation_id="predictions_file", responses={(200, "image/png"): OpenApiTypes.BINARY},
                   tags=["evaluation"])
    def get(self, request, pk, which):
        prediction = get_for_user(Prediction, request.user, pk=pk)
        if not services.can_see_files(request.user, prediction):
            raise NotFound("No Prediction matches the given query.")
        if which not in ("image", "thumbnail", "overlay", "heatmap"):
            raise NotFound("This prediction has no such file.")
        name = services.prediction_file(prediction, which)
        if not name:
            raise NotFound("This prediction has no such file.")
        suffix = name.rsplit(".", 1)[-1] if which == "thumbnail" and "." in name else "png"  # WebP thumbnails
        return serve_file(name, download_name=f"prediction-{prediction.pk}-{which}.{suffix}")


class CorrectPredictionView(APIView):
    """Record the right answer to a prediction's question (or accept the model's answer) for a dataset:
    by default the one the prediction's run was trained on. It goes into the dataset's next version."""

    parser_classes = [JSONParser, MultiPartParser, FormParser]

    @extend_schema(operation_id="predictions_correct", request=CorrectionRequestSerializer,
                   responses={201: CorrectionSerializer, 200: CorrectionSerializer,
                              400: OpenApiResponse(description="Empty answer, a dataset of another project, a "
                                                               "zero-shot prediction without dataset"),
                              403: OpenApiResponse(description="Needs the editor role"),
                              404: OpenApiResponse(description="Not yours")},
                   tags=["evaluation"])
    def post(self, request, pk):
        from datasets_app.models import Dataset
        from datasets_app.versions import VersionError, record_correction

        prediction = get_for_user(Prediction.objects.select_related("project", "training_run__dataset"), request.user,
                                  pk=pk)
        if not services.can_see_files(request.user, prediction):
            raise NotFound("No Prediction matches the given query.")
        data = CorrectionRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        require_role(request.user, prediction.project, "editor")
        dataset = None
        if v.get("dataset") is not None:
            dataset = Dataset.objects.filter(project_id=prediction.project_id, pk=v["dataset"]).first()
            if dataset is None:
                raise ValidationError({"dataset": f"Dataset {v['dataset']} is not a dataset of this prediction's "
                                                  "project."})
        try:
            correction, created = record_correction(request.user, prediction, v.get("answer", ""), dataset=dataset,
                                                    accepted=v.get("accept", False))
        except VersionError as exc:
            raise ValidationError({exc.field or "detail": str(exc)})
        return Response(CorrectionSerializer(correction).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class LeaderboardView(GenericAPIView):
    """Every fine-tuned run and zero-shot model evaluated on one dataset of the project, best VQA accuracy first
    (the latest finished evaluation of each)."""

    serializer_class = LeaderboardRowSerializer

    @extend_schema(operation_id="projects_leaderboard",
                   parameters=[OpenApiParameter("dataset", OpenApiTypes.INT, required=True,
                                                description="The evaluation dataset (a dataset of the project)")],
                   responses={200: LeaderboardRowSerializer(many=True),
                              400: OpenApiResponse(description="dataset missing, not a number, or not in the project"),
                              404: OpenApiResponse(description="Not your project")},
                   tags=["evaluation"])
    def get(self, request, pk):
        from datasets_app.models import Dataset
        from evaluation_app.leaderboard import leaderboard

        project = get_for_user(Project, request.user, pk=pk)
        raw = str(request.query_params.get("dataset") or "")
        if not raw.isdigit() or not 0 < int(raw) <= MAX_ID:
            raise ValidationError({"dataset": "Give ?dataset=<id> of a dataset of this project."})
        dataset = Dataset.objects.filter(project=project, pk=int(raw)).first()
        if dataset is None:
            raise ValidationError({"dataset": f"Dataset {raw} is not a dataset of the project “{project.name}”."})
        rows = leaderboard(project, dataset)
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(LeaderboardRowSerializer(page, many=True).data)
