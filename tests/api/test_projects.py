"""Projects API and pages: CRUD, members, tenancy (404 for outsiders) and roles."""
import pytest
from django.urls import reverse

from piggyback.models import Project

pytestmark = pytest.mark.django_db


def test_token_auth_and_create_project(api_client, owner):
    r = api_client.post("/api/v1/auth/token/", {"username": "olivia", "password": "pw-olivia-123"}, format="json")
    assert r.status_code == 200 and r.json()["token"]
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {r.json()['token']}")
    r = api_client.post("/api/v1/projects/", {"name": "Dermatology", "description": "moles"}, format="json")
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["owner"] == "olivia" and body["my_role"] == "owner"
    r = api_client.get("/api/v1/projects/")
    assert r.json()["count"] == 1 and r.json()["results"][0]["name"] == "Dermatology"


def test_wrong_password_gets_400(api_client, owner):
    r = api_client.post("/api/v1/auth/token/", {"username": "olivia", "password": "nope"}, format="json")
    assert r.status_code == 400


def test_anonymous_api_is_refused(api_client, project):
    assert api_client.get("/api/v1/projects/").status_code in (401, 403)
    assert api_client.get(f"/api/v1/projects/{project.pk}/").status_code in (401, 403)


def test_other_user_gets_404_in_api_and_pages(client_for, client, project, other_user):
    api = client_for(other_user)
    assert api.get(f"/api/v1/projects/{project.pk}/").status_code == 404
    assert api.patch(f"/api/v1/projects/{project.pk}/", {"name": "x"}, format="json").status_code == 404
    assert api.delete(f"/api/v1/projects/{project.pk}/").status_code == 404
    assert api.get("/api/v1/projects/").json()["count"] == 0
    client.force_login(other_user)
    assert client.get(reverse("projects:detail", args=[project.pk])).status_code == 404
    assert client.post(reverse("projects:delete", args=[project.pk])).status_code == 404
    assert Project.objects.filter(pk=project.pk).exists()


@pytest.mark.parametrize(
    "role, action, expected",
    [
        ("viewer", "read", 200), ("editor", "read", 200), ("owner", "read", 200),
        ("viewer", "rename", 403), ("editor", "rename", 403), ("owner", "rename", 200),
        ("viewer", "add_member", 403), ("editor", "add_member", 403), ("owner", "add_member", 201),
        ("viewer", "delete", 403), ("editor", "delete", 403), ("owner", "delete", 204),
    ],
)
def test_role_matrix_projects_api(client_for, project, members, make_user, role, action, expected):
    api = client_for(members[role])
    url = f"/api/v1/projects/{project.pk}/"
    if action == "read":
        r = api.get(url)
    elif action == "rename":
        r = api.patch(url, {"name": "Renamed"}, format="json")
    elif action == "add_member":
        make_user("newbie")
        r = api.post(url + "members/", {"user": "newbie@example.com", "role": "viewer"}, format="json")
    else:
        r = api.delete(url)
    assert r.status_code == expected, r.content


def test_add_unknown_member_gives_clear_message(client_for, project, owner):
    r = client_for(owner).post(f"/api/v1/projects/{project.pk}/members/", {"user": "ghost", "role": "viewer"}, format="json")
    assert r.status_code == 400 and "ghost" in r.json()["detail"]


def test_last_owner_cannot_be_demoted(client, project, owner):
    client.force_login(owner)
    r = client.post(reverse("projects:member_add", args=[project.pk]), {"user": "olivia", "role": "viewer"}, follow=True)
    assert "at least one owner" in r.content.decode()
    assert project.role_for(owner) == "owner"


def test_project_pages_create_and_members(client, owner, make_user):
    client.force_login(owner)
    r = client.post(reverse("projects:list"), {"name": "Teaching", "description": "class 4b"}, follow=True)
    assert r.status_code == 200 and "Project “Teaching” created" in r.content.decode()
    project = Project.objects.get(name="Teaching")
    make_user("teacher2")
    r = client.post(reverse("projects:member_add", args=[project.pk]), {"user": "teacher2", "role": "editor"}, follow=True)
    assert "teacher2 is now a editor" in r.content.decode()
    page = client.get(reverse("projects:list")).content.decode()
    assert "Teaching" in page


def test_pages_require_login(client, project):
    r = client.get(reverse("projects:detail", args=[project.pk]))
    assert r.status_code == 302 and "/accounts/login/" in r["Location"]
