from rest_framework.routers import SimpleRouter

from training_app.api import PretrainedModelViewSet, TrainingRunViewSet

router = SimpleRouter()
router.register("models", PretrainedModelViewSet, basename="model")
router.register("training-runs", TrainingRunViewSet, basename="training-run")
urlpatterns = router.urls
