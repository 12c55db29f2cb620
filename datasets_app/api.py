"""/api/v1/datasets/ — upload (multipart), status, items, cleaning report, exploration stats, delete."""
from __future__ import annotations

import json

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from audit import trail as audit
from datasets_app import services
from datasets_app.models import Dataset, DatasetItem
from datasets_app.serializers import (
    DatasetCreatedSerializer,
    DatasetCreateSerializer,
    DatasetItemSerializer,
    DatasetSerializer,
)
from piggyback import filters
from piggyback.api import TenantViewSetMixin
from piggyback.files import serve_file
from piggyback.models import Project
from piggyback.tenancy import get_for_user


class FileRenderer(BaseRenderer):
    """Lets file actions answer any Accept header; error bodies are still JSON."""

    media_type = "*/*"
    format = "bin"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, (bytes, str)):
            return data
        return json.dumps(data).encode()


class CSVRenderer(FileRenderer):
    media_type = "text/csv"
    format = "csv"


SEARCH_PARAMS = [
    OpenApiParameter("search", str, description="Text in the question, an answer or the image name."),
    OpenApiParameter("answer_type", str, enum=["yes/no", "number", "other"], description="yes/no, number or other."),
    OpenApiParameter("question_type", str, description="First words of the question, e.g. 'what color is the'."),
]


@extend_schema_view(
    list=extend_schema(summary="Datasets you can see"),
    retrieve=extend_schema(summary="A dataset: status, progress, counts, warnings"),
    destroy=extend_schema(summary="Delete a dataset (project owner)"),
)
class DatasetViewSet(TenantViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                     mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Datasets of your projects: upload an images ZIP with a questions file, follow the cleaning, browse the
    kept questions, download the cleaning report. Outside your projects every dataset answers 404."""

    queryset = Dataset.objects.all()
    serializer_class = DatasetSerializer
    filterset_class = filters.ProjectFilter
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    role_by_action = {"items": "viewer", "report": "viewer", "stats": "viewer", "item_image": "viewer",
                      "retry": "editor", "cancel": "editor", "versions": "editor"}
    throttle_scopes = {"create": "upload", "retry": "job", "versions": "job"}  # rate-limit classes (piggyback/throttling.py)

    def get_renderers(self):
        if getattr(self, "action", None) == "report":
            return [CSVRenderer(), JSONRenderer()]
        return super().get_renderers()

    def get_queryset(self):
        return Dataset.objects.for_user(self.request.user).select_related("project").order_by("-created_at")

    @extend_schema(
        summary="Upload a dataset (images ZIP + questions file); cleaning runs in the background",
        request={"multipart/form-data": DatasetCreateSerializer},
        responses={202: DatasetCreatedSerializer, 400: OpenApiResponse(description="Unusable upload"),
                   403: OpenApiResponse(description="Needs the editor role")},
    )
    def create(self, request, *args, **kwargs):
        ser = DatasetCreateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = ser.validated_data
        project = get_for_user(Project, request.user, "editor", pk=data["project"])
        files = {key: (services.claim_upload(request.user, data[f"{key}_upload"], key)
                       if data.get(f"{key}_upload") else data.get(key))
                 for key in ("images", "questions", "annotations")}
        dataset = services.create_dataset(request.user, project, data.get("name", ""), **files)
        body = {"id": dataset.pk, "status": dataset.status, "format": dataset.format,
                "url": request.build_absolute_uri(f"/api/v1/datasets/{dataset.pk}/")}
        return Response(body, status=status.HTTP_202_ACCEPTED)

    def destroy(self, request, *args, **kwargs):
        services.delete_dataset(self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(parameters=SEARCH_PARAMS, responses=DatasetItemSerializer(many=True), filters=False,
                   summary="Cleaned items (paginated, searchable)")
    @action(detail=True, methods=["get"])
    def items(self, request, pk=None):
        dataset = self.get_object()
        params = filters.cleaned(filters.ItemFilter, request, DatasetItem.objects.none())
        qs = services.search_items(dataset, params.get("search") or "", params.get("answer_type") or "",
                                   params.get("question_type") or "")
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(DatasetItemSerializer(page, many=True).data)

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR},
                   summary="Cleaning report: every removed row and image with its reason (CSV)")
    def report(self, request, pk=None):  # routed in api_urls.py as datasets/<pk>/report.csv (no slash)
        dataset = self.get_object()
        audit.record(audit.A.DATASET_DOWNLOADED, project=dataset.project, target=dataset,
                     details={"file": "cleaning report CSV"})
        response = HttpResponse(services.report_csv(dataset), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="cleaning-report-{dataset.pk}.csv"'
        response["X-Content-Type-Options"] = "nosniff"
        return response

    @extend_schema(responses=OpenApiTypes.OBJECT, summary="Exploration statistics (chart data) and counts")
    @action(detail=True, methods=["get"])
    def stats(self, request, pk=None):
        dataset = self.get_object()
        return Response({"id": dataset.pk, "status": dataset.status, "counts": dataset.counts,
                         "stats": dataset.stats})

    @extend_schema(responses={(200, "image/*"): OpenApiTypes.BINARY}, summary="Image of one item")
    @action(detail=True, methods=["get"], url_path=r"items/(?P<item_pk>[0-9]+)/image",
            renderer_classes=[FileRenderer])
    def item_image(self, request, pk=None, item_pk=None):
        dataset = self.get_object()
        item = get_object_or_404(DatasetItem.objects.filter(dataset=dataset), pk=item_pk)
        return serve_file(item.image)

    @extend_schema(responses={(200, "image/webp"): OpenApiTypes.BINARY},
                   summary="Thumbnail of one item (WebP, at most 256 px, made at cleaning)")
    @action(detail=True, methods=["get"], url_path=r"items/(?P<item_pk>[0-9]+)/thumbnail",
            renderer_classes=[FileRenderer])
    def item_thumbnail(self, request, pk=None, item_pk=None):
        dataset = self.get_object()
        item = get_object_or_404(DatasetItem.objects.filter(dataset=dataset).select_related("dataset"), pk=item_pk)
        return serve_file(services.item_thumbnail(item))

    @extend_schema(request=None, responses={202: DatasetSerializer}, summary="Run the cleaning again")
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        dataset = self.get_object()
        services.retry_cleaning(dataset)
        dataset.refresh_from_db()
        return Response(DatasetSerializer(dataset).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses=DatasetSerializer, summary="Cancel the cleaning")
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        dataset = self.get_object()
        services.cancel_cleaning(dataset)
        dataset.refresh_from_db()
        return Response(DatasetSerializer(dataset).data)

    @extend_schema(request=None, responses={202: DatasetSerializer,
                                            400: OpenApiResponse(description="not ready, or no pending corrections"),
                                            403: OpenApiResponse(description="Needs the editor role")},
                   summary="Create version N+1: the items plus the pending corrections (a new, immutable dataset)")
    @action(detail=True, methods=["post"])
    def versions(self, request, pk=None):
        """The new version has its own id, ``version`` and ``parent``; its merge and cleaning run in the background
        like an upload's cleaning (same report). Image files are shared with earlier versions, not copied."""
        from datasets_app.versions import VersionError, create_version

        dataset = self.get_object()
        try:
            version = create_version(request.user, dataset)
        except VersionError as exc:
            raise ValidationError({"detail": str(exc)})
        return Response(DatasetSerializer(version, context={"request": request}).data, status=status.HTTP_202_ACCEPTED)
