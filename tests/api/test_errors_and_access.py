"""One error type, one exception handler, one access helper, and the usual status codes (issues 12.3, 15.1, 15.2).

* no or a wrong credential: 401 with ``WWW-Authenticate: Token``; a member without the role: 403 with that role's
  message; an object outside the user's projects: 404 (API and pages alike);
* an :class:`~gpu_worker.errors.AppError` raised anywhere becomes the same status and body in the API and an error
  page (or a form error) with the same status in the pages;
* ``gpu_worker.errors`` imports without Django.
"""
import subprocess
import sys

import pytest
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.urls import reverse

from datasets_app.models import Dataset
from gpu_worker import UserFacingError
from gpu_worker.errors import AppError, Conflict, InvalidInput, StorageFull, Unavailable
from piggyback import errors, tenancy
from piggyback.models import Membership, Project

pytestmark = pytest.mark.django_db


def _dataset(project, owner, status="succeeded"):
    return Dataset.objects.create(project=project, name="shapes", status=status, created_by=owner,
                                  images_file="x.zip", questions_file="x.csv", has_answers=True)


# ------------------------------------------------------------------------------------------ 401
@pytest.mark.parametrize("auth", [None, "Token 0123456789abcdef0123456789abcdef01234567", "Token", "Basic Zm9vOmJhcg=="])
def test_missing_or_invalid_credentials_get_401_with_token_challenge(api_client, project, auth):
    if auth:
        api_client.credentials(HTTP_AUTHORIZATION=auth)
    for url in ("/api/v1/projects/", f"/api/v1/projects/{project.pk}/", "/api/v1/models/", "/api/v1/training-runs/"):
        r = api_client.get(url)
        assert r.status_code == 401, (url, auth, r.status_code)
        assert r["WWW-Authenticate"] == "Token"
        assert r.json()["detail"]


def test_valid_token_is_accepted_and_session_still_works(api_client, client, owner, project):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=owner)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert api_client.get(f"/api/v1/projects/{project.pk}/").status_code == 200
    client.force_login(owner)
    assert client.get(f"/api/v1/projects/{project.pk}/").status_code == 200


# ------------------------------------------------------------------------------------------ 403 / 404
def test_role_403_and_outsider_404_in_api(client_for, project, owner, members, other_user):
    ds = _dataset(project, owner)
    viewer, editor = client_for(members["viewer"]), client_for(members["editor"])
    r = viewer.post("/api/v1/training-runs/", {"dataset": ds.pk, "model": "baseline-rnn"}, format="json")
    assert r.status_code == 403
    assert r.json()["detail"] == tenancy.ROLE_NEEDS["editor"].format(project="Radiology", current="a viewer")
    r = editor.delete(f"/api/v1/datasets/{ds.pk}/")
    assert r.status_code == 403
    assert r.json()["detail"] == tenancy.ROLE_NEEDS["owner"].format(project="Radiology", current="an editor")
    outsider = client_for(other_user)
    for method, url in (("get", f"/api/v1/datasets/{ds.pk}/"), ("delete", f"/api/v1/datasets/{ds.pk}/"),
                        ("post", f"/api/v1/projects/{project.pk}/members/")):
        assert getattr(outsider, method)(url, {}, format="json").status_code == 404, url
    r = outsider.post("/api/v1/training-runs/", {"dataset": ds.pk, "model": "baseline-rnn"}, format="json")
    assert r.status_code == 404  # someone else's dataset is indistinguishable from a missing one
    assert Dataset.objects.filter(pk=ds.pk).exists()


def test_role_403_and_outsider_404_in_pages(client, project, owner, members, other_user):
    ds = _dataset(project, owner)
    client.force_login(members["viewer"])
    r = client.post(reverse("datasets:delete", args=[ds.pk]))
    assert r.status_code == 403
    client.force_login(other_user)
    assert client.get(reverse("datasets:detail", args=[ds.pk])).status_code == 404
    assert client.post(reverse("datasets:delete", args=[ds.pk])).status_code == 404
    assert Dataset.objects.filter(pk=ds.pk).exists()


def test_get_for_user_is_the_one_access_rule(project, owner, members, other_user):
    ds = _dataset(project, owner)
    assert tenancy.get_for_user(Dataset, members["viewer"], pk=ds.pk) == ds
    assert tenancy.get_for_user(Dataset.objects.select_related("project"), owner, "owner", pk=ds.pk) == ds
    with pytest.raises(Http404):
        tenancy.get_for_user(Dataset, other_user, pk=ds.pk)
    with pytest.raises(Http404):
        tenancy.get_for_user(Dataset, owner, pk=ds.pk + 1000)
    with pytest.raises(PermissionDenied, match="editor role in “Radiology”.*you are a viewer"):
        tenancy.get_for_user(Dataset, members["viewer"], "editor", pk=ds.pk)
    with pytest.raises(PermissionDenied, match="owner role in “Radiology”.*you are an editor"):
        tenancy.get_for_user(Project, members["editor"], "owner", pk=project.pk)


def test_cached_role_follows_membership_changes(project, owner, members):
    from piggyback.project_services import add_member, remove_member

    editor = members["editor"]
    assert tenancy.has_role(editor, project, "editor")
    add_member(project, editor.username, "viewer")  # same user object: the cached role must not survive
    assert not tenancy.has_role(editor, project, "editor") and tenancy.role_of(editor, project) == "viewer"
    remove_member(project, Membership.objects.get(project=project, user=editor))
    assert tenancy.role_of(editor, project) is None


def test_role_is_queried_once_per_request_object(project, members, django_assert_num_queries):
    viewer = members["viewer"]
    with django_assert_num_queries(1):
        for _ in range(3):
            tenancy.has_role(viewer, project, "viewer")


# ------------------------------------------------------------------------------------------ one error type
def test_gpu_worker_errors_import_without_django():
    code = ("import sys, gpu_worker.errors as e; assert 'django' not in sys.modules, 'django imported'; "
            "assert issubclass(e.Conflict, e.AppError)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_user_facing_error_is_the_app_error():
    assert UserFacingError is AppError
    err = InvalidInput("Pick a file.", "images")
    assert (err.status, err.field, err.errors) == (400, "images", {"images": "Pick a file."})
    assert err.as_dict() == {"detail": "Pick a file.", "code": "invalid", "field": "images",
                             "errors": {"images": "Pick a file."}}
    assert (Conflict("x").status, Unavailable("x").status, StorageFull("x").status) == (409, 409, 507)
    assert AppError("x", status=418).status == 418


@pytest.mark.parametrize("exc, status, body", [
    (Conflict("Only a finished run can be exported."), 409,
     {"detail": "Only a finished run can be exported.", "code": "conflict"}),
    (UserFacingError("Row 7: the question is empty."), 400, {"detail": "Row 7: the question is empty.", "code": "invalid"}),
    (DjangoValidationError("Type a question."), 400, {"detail": "Type a question.", "code": "invalid"}),
    (DjangoValidationError({"top_k": "top k must be a whole number."}), 400,
     {"detail": "top k must be a whole number.", "code": "invalid", "field": "top_k",
      "errors": {"top_k": "top k must be a whole number."}}),
])
def test_exception_handler_answers_the_errors_status(exc, status, body):
    response = errors.exception_handler(exc, {})
    assert response.status_code == status and response.data == body


def test_same_error_same_status_across_endpoints(client_for, project, owner, members):
    """A state conflict answers 409 wherever it happens (it was 400 in one endpoint and 409 in another)."""
    ds = _dataset(project, owner)
    editor = client_for(owner)
    r = editor.post(f"/api/v1/datasets/{ds.pk}/retry/")
    assert r.status_code == 409 and r.json()["code"] == "conflict" and "succeeded" in r.json()["detail"]
    from training_app.models import PretrainedModel, TrainingRun

    model = PretrainedModel.objects.create(key="m-errors", name="M", family="baseline", task="classify")
    run = TrainingRun.objects.create(project=project, dataset=ds, model=model, created_by=owner, status="succeeded")
    assert editor.post(f"/api/v1/training-runs/{run.pk}/cancel/").status_code == 409
    assert editor.post(f"/api/v1/training-runs/{run.pk}/resume/").status_code == 409
    TrainingRun.objects.filter(pk=run.pk).update(status="running")
    r = editor.get(f"/api/v1/training-runs/{run.pk}/export/")
    assert r.status_code == 409 and "running" in r.json()["detail"]


def test_page_app_error_renders_an_error_page_with_its_status(rf, owner):
    from django.contrib.auth.models import AnonymousUser

    request = rf.get("/somewhere/")
    request.user = AnonymousUser()
    middleware = errors.AppErrorMiddleware(lambda r: None)
    response = middleware.process_exception(request, Conflict("This run has already succeeded; nothing to cancel."))
    assert response.status_code == 409
    assert "This run has already succeeded; nothing to cancel." in response.content.decode()
    assert middleware.process_exception(request, KeyError("x")) is None


def test_add_to_form_places_field_errors(db):
    from django import forms

    class F(forms.Form):
        epochs = forms.IntegerField(required=False)

    form = F({})
    assert form.is_valid()
    errors.add_to_form(form, InvalidInput("2 problems", errors={"epochs": "Too many.", "bogus": "Unknown."}))
    assert form.errors == {"epochs": ["Too many."], "__all__": ["Unknown."]}
    form = F({})
    form.is_valid()
    errors.add_to_form(form, Conflict("Already running."))
    assert form.non_field_errors() == ["Already running."]
