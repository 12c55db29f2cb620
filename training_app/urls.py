from django.urls import path

from training_app import views as v

app_name = "training"
urlpatterns = [
    path("datasets/<int:dataset_pk>/start/", v.start, name="start"),
    path("projects/<int:project_pk>/", v.run_list, name="list"),
    path("runs/<int:pk>/", v.detail, name="detail"),
    path("runs/<int:pk>/cancel/", v.cancel, name="cancel"),
    path("runs/<int:pk>/resume/", v.resume, name="resume"),
    path("runs/<int:pk>/rerun/", v.rerun, name="rerun"),
    path("runs/<int:pk>/export/", v.export, name="export"),
    path("runs/<int:pk>/retrain/", v.retrain, name="retrain"),
]
