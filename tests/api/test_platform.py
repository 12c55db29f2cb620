"""Platform endpoints: health, OpenAPI schema, Swagger UI, accounts, admin, job dashboard."""
import pytest

pytestmark = pytest.mark.django_db


def test_healthz_checks_db_and_redis(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "database": "ok", "redis": "ok"}


def test_openapi_schema_and_swagger(client):
    r = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert r.status_code == 200
    schema = r.json()
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/projects/" in schema["paths"] and "/api/v1/auth/token/" in schema["paths"]
    r = client.get("/api/docs/")
    assert r.status_code == 200 and b"swagger" in r.content.lower()
    # Every asset is served by the platform itself (offline hospital/school networks): no CDN.
    assert b"cdn." not in r.content and b"jsdelivr" not in r.content and b"unpkg" not in r.content
    assert b"/static/drf_spectacular_sidecar/" in r.content


@pytest.mark.parametrize("url", ["/accounts/login/", "/accounts/signup/"])
def test_pages_reference_no_external_assets(client, url):
    body = client.get(url).content
    assert b"https://" not in body and b"http://" not in body.replace(b"http://testserver", b"")


def test_signup_login_logout_flow(client, django_user_model):
    r = client.post(
        "/accounts/signup/",
        {"email": "new@example.com", "username": "newdoc", "password1": "a-Long-passw0rd!", "password2": "a-Long-passw0rd!"},
    )
    assert r.status_code == 302
    assert django_user_model.objects.filter(username="newdoc").exists()
    assert client.get("/projects/").status_code == 200
    client.post("/accounts/logout/")
    assert client.get("/projects/").status_code == 302
    r = client.post("/accounts/login/", {"login": "newdoc", "password": "a-Long-passw0rd!"})
    assert r.status_code == 302


def test_password_reset_sends_console_mail(client, owner, mailoutbox):
    r = client.post("/accounts/password/reset/", {"email": owner.email})
    assert r.status_code == 302
    assert len(mailoutbox) == 1 and "password" in mailoutbox[0].subject.lower()


def test_admin_lists_every_model(client, make_user, project):
    staff = make_user("root_admin", is_staff=True, is_superuser=True)
    client.force_login(staff)
    for url in [
        "/admin/piggyback/project/", "/admin/piggyback/membership/", "/admin/datasets_app/dataset/",
        "/admin/datasets_app/datasetitem/", "/admin/datasets_app/droppedrow/", "/admin/training_app/pretrainedmodel/",
        "/admin/training_app/trainingrun/", "/admin/evaluation_app/evaluation/", "/admin/evaluation_app/prediction/",
        f"/admin/piggyback/project/{project.pk}/change/",
    ]:
        assert client.get(url).status_code == 200, url


def test_rq_dashboard_staff_only(client, owner, make_user):
    client.force_login(owner)
    assert client.get("/django-rq/").status_code == 302  # non-staff: sent to the admin login
    client.force_login(make_user("ops", is_staff=True))
    assert client.get("/django-rq/").status_code == 200


def test_production_settings_refuse_without_secret(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "ALLOWED_HOSTS")}
    env["DJANGO_ENV"] = "production"
    r = subprocess.run([sys.executable, "-c", "import django; from django.conf import settings; settings.DEBUG"],
                       env={**env, "DJANGO_SETTINGS_MODULE": "piggyback.settings"}, capture_output=True, text=True)
    assert r.returncode != 0 and "SECRET_KEY, ALLOWED_HOSTS" in r.stderr
