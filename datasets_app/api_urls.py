from django.urls import path
from rest_framework.routers import SimpleRouter

from datasets_app.api import DatasetViewSet
from datasets_app.uploads_api import UploadCreateView, UploadDetailView

router = SimpleRouter()
router.register("datasets", DatasetViewSet, basename="dataset")
urlpatterns = [
    # the cleaning report keeps its file name in the URL (no trailing slash)
    path("datasets/<int:pk>/report.csv", DatasetViewSet.as_view({"get": "report"}), name="dataset-report-csv"),
    path("uploads/", UploadCreateView.as_view(), name="upload-create"),
    path("uploads/<str:upload_id>/", UploadDetailView.as_view(), name="upload-detail"),
    *router.urls,
]
