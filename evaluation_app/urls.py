from django.urls import path

from evaluation_app import views

app_name = "evaluation"
urlpatterns = [
    path("runs/<int:run_pk>/", views.run_page, name="run"),
    path("models/", views.zero_shot_list, name="zero_shot"),
    path("models/<int:model_pk>/", views.model_page, name="model"),
    path("evaluations/<int:pk>/", views.evaluation_page, name="evaluation"),
    path("evaluations/<int:pk>/cancel/", views.evaluation_cancel, name="evaluation_cancel"),
    path("evaluations/<int:pk>/retry/", views.evaluation_retry, name="evaluation_retry"),
    path("evaluations/<int:pk>/review/", views.review_page, name="review"),
    path("projects/<int:project_pk>/leaderboard/", views.leaderboard_page, name="leaderboard"),
    path("history/", views.history_page, name="history"),
    path("history/download.zip", views.history_zip, name="history_zip"),
    path("samples/<str:key>.png", views.sample_image, name="sample_image"),
]
