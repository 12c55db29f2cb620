from django.contrib import admin
from django.shortcuts import redirect, render
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from piggyback.auth_api import TokenView
from piggyback.health import healthz
from piggyback.project_api import ProjectViewSet

admin.site.site_header = "PiggyBack administration"
admin.site.site_title = "PiggyBack admin"
admin.site.index_title = "Projects, datasets, models, runs and evaluations"


def home(request):
    """Signed-in users go to their projects; an anonymous visitor gets one page that explains PiggyBack."""
    if request.user.is_authenticated:
        return redirect("projects:list")
    return render(request, "piggyback/landing.html")


router = SimpleRouter()
router.register("projects", ProjectViewSet, basename="project")

api_v1 = [
    path("auth/token/", TokenView.as_view(), name="api-token"),
    path("", include(router.urls)),
    path("", include("datasets_app.api_urls")),
    path("", include("training_app.api_urls")),
    path("", include("evaluation_app.api_urls")),
]

urlpatterns = [
    path("", home, name="home"),
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("django-rq/", include("django_rq.urls")),
    path("projects/", include("piggyback.project_urls")),
    path("datasets/", include("datasets_app.urls")),
    path("training/", include("training_app.urls")),
    path("evaluate/", include("evaluation_app.urls")),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]
