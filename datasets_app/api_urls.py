from django.urls import path
from rest_framework.routers import SimpleRouter

from datasets_app.api import DatasetViewSet

router = SimpleRouter()
router.register("datasets", DatasetViewSet, basename="dataset")
urlpatterns = [
    # the cleaning report keeps its file name in the URL (no trailing slash)
    path("datasets/<int:pk>/report.csv", DatasetViewSet.as_view({"get": "report"}), name="dataset-report-csv"),
    *router.urls,
]
