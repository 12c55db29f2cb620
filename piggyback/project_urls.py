from django.urls import path

from audit.views import project_audit
from piggyback import project_views as v

app_name = "projects"
urlpatterns = [
    path("", v.project_list, name="list"),
    path("<int:pk>/", v.project_detail, name="detail"),
    path("<int:pk>/members/add/", v.member_add, name="member_add"),
    path("<int:pk>/members/<int:membership_pk>/remove/", v.member_remove, name="member_remove"),
    path("<int:pk>/delete/", v.project_delete, name="delete"),
    path("<int:pk>/audit/", project_audit, name="audit"),
]
