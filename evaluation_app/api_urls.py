from django.urls import path
from rest_framework.routers import SimpleRouter

from evaluation_app import api

router = SimpleRouter()
router.register("evaluations", api.EvaluationViewSet, basename="evaluation")
router.register("predictions", api.PredictionViewSet, basename="prediction")

urlpatterns = [
    path("training-runs/<int:pk>/predict/", api.RunPredictView.as_view(), name="api-run-predict"),
    path("models/<slug:key>/predict/", api.ModelPredictView.as_view(), name="api-model-predict"),
    path("evaluations/<int:pk>/predictions.csv", api.EvaluationCsvView.as_view(), name="api-evaluation-csv"),
    path("evaluations/<int:pk>/annotated.zip", api.EvaluationZipView.as_view(), name="api-evaluation-zip"),
    path("predictions/<int:pk>/files/<str:which>/", api.PredictionFileView.as_view(), name="api-prediction-file"),
    path("predictions/<int:pk>/correct/", api.CorrectPredictionView.as_view(), name="api-prediction-correct"),
    path("projects/<int:pk>/leaderboard/", api.LeaderboardView.as_view(), name="api-project-leaderboard"),
    *router.urls,
]
