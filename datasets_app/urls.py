from django.urls import path

from datasets_app import views as v

app_name = "datasets"
urlpatterns = [
    path("projects/<int:project_pk>/upload/", v.upload, name="upload"),
    path("projects/<int:project_pk>/load-sample/", v.load_sample, name="load_sample"),
    path("sample/<str:filename>", v.sample_file, name="sample"),
    path("<int:pk>/", v.detail, name="detail"),
    path("<int:pk>/report.csv", v.report_csv, name="report"),
    path("<int:pk>/retry/", v.retry, name="retry"),
    path("<int:pk>/cancel/", v.cancel, name="cancel"),
    path("<int:pk>/delete/", v.delete, name="delete"),
    path("<int:pk>/versions/", v.new_version, name="new_version"),
    path("items/<int:item_id>/image", v.item_image, name="item_image"),
    path("items/<int:item_id>/thumbnail", v.item_thumbnail, name="item_thumbnail"),
]
