"""Datasets API: multipart upload of each format, status, items, report, stats, images, tenancy, roles."""
from __future__ import annotations

import csv
import io

import pytest

from datasets_app.models import Dataset
from tests.api.dataset_uploads import (
    FORMULA,
    clean_files,
    csv_bytes,
    hostile_zip_files,
    jsonl_files,
    mixed_files,
    png,
    upload,
    vqa2_files,
    zip_bytes,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """Users are made by the shared fixtures; a cheap hasher keeps this file fast on 2 cores."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
URL = "/api/v1/datasets/"


def post(api, project, files, name="d", capture=None):
    data = {"project": project.pk, "name": name, "images": files[0], "questions": files[1]}
    if len(files) > 2:
        data["annotations"] = files[2]
    with capture(execute=True):
        return api.post(URL, data, format="multipart")


@pytest.fixture
def uploaded(client_for, owner, project, run_jobs, django_capture_on_commit_callbacks):
    """A cleaned 'mixed' dataset (warning level) uploaded through the API by the owner."""
    r = post(client_for(owner), project, mixed_files(), "mixed", django_capture_on_commit_callbacks)
    assert r.status_code == 202, r.content
    run_jobs()
    return Dataset.objects.get(pk=r.json()["id"])


@pytest.mark.parametrize("kind, expected_format, kept", [
    ("csv", "csv", 3), ("vqa2", "vqav2", 2), ("jsonl", "json", 2)])
def test_upload_each_format_then_clean(client_for, owner, project, run_jobs, django_capture_on_commit_callbacks,
                                       kind, expected_format, kept):
    files = {"csv": clean_files, "vqa2": vqa2_files, "jsonl": jsonl_files}[kind]()
    api = client_for(owner)
    r = post(api, project, files, f"{kind} set", django_capture_on_commit_callbacks)
    assert r.status_code == 202, r.content
    body = r.json()
    assert body["status"] == "queued" and body["format"] == expected_format
    assert api.get(f"{URL}{body['id']}/").json()["status"] == "queued"
    run_jobs()
    d = api.get(f"{URL}{body['id']}/").json()
    assert d["status"] == "succeeded", d["error"]
    assert d["progress"] == 1.0 and d["format"] == expected_format and d["level"] == "success"
    assert d["counts"]["rows_kept"] == kept and d["message"].startswith("Your dataset is ready:")
    items = api.get(f"{URL}{body['id']}/items/").json()
    assert items["count"] == kept and all(len(it["answers"]) == 10 for it in items["results"])
    if kind == "vqa2":
        first = items["results"][0]
        assert first["answer"] == "red" and first["answer_type"] == "other" and first["question_type"] == "what color is"


def test_warning_counts_items_search_stats_and_report(client_for, owner, uploaded):
    api = client_for(owner)
    d = api.get(f"{URL}{uploaded.pk}/").json()
    assert d["status"] == "succeeded" and d["level"] == "warning"
    assert d["counts"]["rows_dropped"] == 4 and d["counts"]["images_dropped"] == 1
    assert "removed" in d["message"]
    r = api.get(f"{URL}{uploaded.pk}/items/", {"search": "color"}).json()
    assert r["count"] == 2 and {it["answer"] for it in r["results"]} == {"red", "green"}
    assert api.get(f"{URL}{uploaded.pk}/items/", {"search": "yes"}).json()["count"] == 1  # answer text
    assert api.get(f"{URL}{uploaded.pk}/items/", {"answer_type": "number"}).json()["count"] == 1
    stats = api.get(f"{URL}{uploaded.pk}/stats/").json()
    assert stats["stats"]["questions"] == 4 and len(stats["stats"]["top_answers"]["labels"]) == 4
    r = api.get(f"{URL}{uploaded.pk}/report.csv")
    assert r.status_code == 200 and r["Content-Type"].startswith("text/csv")
    assert "attachment" in r["Content-Disposition"]
    text = r.content.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["row", "image", "question", "reason_code", "reason"]
    assert len(rows) == 1 + 5
    formula_row = next(row for row in rows if row[0] == "6")
    assert formula_row[2] == "'" + FORMULA and formula_row[3] == "image_not_found"
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)


def test_item_image_action(client_for, owner, uploaded):
    api = client_for(owner)
    item = uploaded.items.order_by("row").first()
    r = api.get(f"{URL}{uploaded.pk}/items/{item.pk}/image/")
    assert r.status_code == 200 and r["Content-Type"] == "image/png"
    assert b"".join(r.streaming_content).startswith(b"\x89PNG")
    assert api.get(f"{URL}{uploaded.pk}/items/999999/image/").status_code == 404


def test_hostile_zip_ends_failed_with_a_clean_message(client_for, owner, project, run_jobs,
                                                      django_capture_on_commit_callbacks):
    api = client_for(owner)
    r = post(api, project, hostile_zip_files(), "evil", django_capture_on_commit_callbacks)
    assert r.status_code == 202
    run_jobs()
    d = api.get(f"{URL}{r.json()['id']}/").json()
    assert d["status"] == "failed"
    assert "no usable images" in d["error"] and "Traceback" not in d["error"]
    assert "traceback" not in d
    assert api.get(f"{URL}{r.json()['id']}/items/").json()["count"] == 0


def test_missing_columns_fail_with_the_column_names(client_for, owner, project, run_jobs,
                                                    django_capture_on_commit_callbacks, uploaded):
    api = client_for(owner)
    bad = upload("q.csv", csv_bytes([("a.png", "what?")], header=("img_file", "text")))
    r = post(api, project, (clean_files()[0], bad), "bad", django_capture_on_commit_callbacks)
    run_jobs()
    d = api.get(f"{URL}{r.json()['id']}/").json()
    assert d["status"] == "failed" and "no image and no question column" in d["error"]
    assert "'img_file'" in d["error"] and "'text'" in d["error"]
    uploaded.refresh_from_db()
    assert uploaded.status == "succeeded" and uploaded.items.count() == 4  # the other dataset is untouched


@pytest.mark.parametrize("field, files, message", [
    ("images", lambda: (upload("a.png", png()), clean_files()[1]), "not a ZIP archive"),
    ("images", lambda: (upload("fake.zip", b"hello, not a zip"), clean_files()[1]), "not a ZIP archive"),
    ("questions", lambda: (clean_files()[0], upload("q.xls", b"\xd0\xcf\x11\xe0old excel")), "Save As"),
    ("questions", lambda: (clean_files()[0], upload("q.xlsx", b"image,question\na.png,q?\n")), "not an Excel workbook"),
    ("questions", lambda: (clean_files()[0], upload("q.csv", zip_bytes({"x": b"y"}))), "not a text file"),
])
def test_obvious_problems_are_refused_up_front(client_for, owner, project, redis_conn, field, files, message):
    r = client_for(owner).post(URL, {"project": project.pk, "name": "x", "images": files()[0],
                                     "questions": files()[1]}, format="multipart")
    assert r.status_code == 400, r.content
    assert r.json()["field"] == field and message in r.json()["detail"]
    assert not Dataset.objects.exists()


def test_upload_size_limit(client_for, owner, project, settings, redis_conn):
    settings.UPLOAD_MAX_BYTES = 100
    images, questions = clean_files()
    r = client_for(owner).post(URL, {"project": project.pk, "images": images, "questions": questions},
                               format="multipart")
    assert r.status_code == 400 and "the limit is" in r.json()["detail"] and r.json()["field"] == "images"


def test_missing_or_empty_file_is_a_field_error(client_for, owner, project):
    r = client_for(owner).post(URL, {"project": project.pk, "images": clean_files()[0]}, format="multipart")
    assert r.status_code == 400 and "questions" in r.json()
    r = client_for(owner).post(URL, {"project": project.pk, "images": clean_files()[0],
                                     "questions": upload("q.csv", b"")}, format="multipart")
    assert r.status_code == 400 and "empty" in r.json()["questions"][0]


def test_list_filters_by_project(client_for, owner, project, uploaded):
    from piggyback.project_services import create_project

    other = create_project(owner, "Other")
    api = client_for(owner)
    assert api.get(URL).json()["count"] == 1
    assert api.get(URL, {"project": project.pk}).json()["count"] == 1
    assert api.get(URL, {"project": other.pk}).json()["count"] == 0


def test_outsider_gets_404_everywhere(client_for, other_user, project, uploaded, django_capture_on_commit_callbacks):
    api = client_for(other_user)
    item = uploaded.items.first()
    for path in ("", "items/", "report.csv", "stats/", f"items/{item.pk}/image/"):
        assert api.get(f"{URL}{uploaded.pk}/{path}").status_code == 404, path
    assert api.delete(f"{URL}{uploaded.pk}/").status_code == 404
    assert api.post(f"{URL}{uploaded.pk}/retry/").status_code == 404
    assert api.get(URL).json()["count"] == 0
    r = post(api, project, clean_files(), "intruder", django_capture_on_commit_callbacks)
    assert r.status_code == 404
    assert client_for(None).get(f"{URL}{uploaded.pk}/").status_code in (401, 403)
    assert Dataset.objects.count() == 1


@pytest.mark.parametrize("role, upload_status, delete_status", [
    ("viewer", 403, 403), ("editor", 202, 403), ("owner", 202, 204)])
def test_role_matrix(client_for, members, project, uploaded, redis_conn, django_capture_on_commit_callbacks,
                     role, upload_status, delete_status):
    api = client_for(members[role])
    item = uploaded.items.first()
    for path in ("", "items/", "report.csv", "stats/", f"items/{item.pk}/image/"):
        assert api.get(f"{URL}{uploaded.pk}/{path}").status_code == 200, path
    r = post(api, project, clean_files(), "by " + role, django_capture_on_commit_callbacks)
    assert r.status_code == upload_status, r.content
    if role == "viewer":
        assert "needs the editor role" in r.json()["detail"]
    r = api.delete(f"{URL}{uploaded.pk}/")
    assert r.status_code == delete_status
    assert Dataset.objects.filter(pk=uploaded.pk).exists() == (delete_status != 204)


def test_delete_removes_items_and_files(client_for, owner, uploaded, django_capture_on_commit_callbacks):
    from django.core.files.storage import default_storage

    from datasets_app.models import DatasetItem

    image = uploaded.items.first().image
    upload_name = uploaded.images_file.name
    assert default_storage.exists(image) and default_storage.exists(upload_name)
    with django_capture_on_commit_callbacks(execute=True):
        r = client_for(owner).delete(f"{URL}{uploaded.pk}/")
    assert r.status_code == 204
    assert not Dataset.objects.filter(pk=uploaded.pk).exists()
    assert not DatasetItem.objects.filter(dataset_id=uploaded.pk).exists()
    assert not default_storage.exists(image) and not default_storage.exists(upload_name)


def test_delete_refused_while_a_training_run_uses_it(client_for, owner, project, uploaded):
    from training_app.models import PretrainedModel, TrainingRun

    model, _ = PretrainedModel.objects.get_or_create(
        key="datasets-test-model", defaults={"name": "test", "family": "baseline", "task": "classify"})
    TrainingRun.objects.create(project=project, dataset=uploaded, model=model)
    r = client_for(owner).delete(f"{URL}{uploaded.pk}/")
    assert r.status_code == 409 and "training run" in r.json()["detail"]
    assert Dataset.objects.filter(pk=uploaded.pk).exists() and uploaded.items.count() == 4


def test_retry_and_cancel_actions(client_for, owner, members, project, run_jobs, django_capture_on_commit_callbacks):
    api = client_for(owner)
    r = post(api, project, hostile_zip_files(), "evil", django_capture_on_commit_callbacks)
    pk = r.json()["id"]
    run_jobs()
    assert client_for(members["viewer"]).post(f"{URL}{pk}/retry/").status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        r = api.post(f"{URL}{pk}/retry/")
    assert r.status_code == 202 and r.json()["status"] == "queued" and r.json()["attempts"] == 2
    r = api.post(f"{URL}{pk}/cancel/")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    run_jobs()
    assert api.get(f"{URL}{pk}/").json()["status"] == "cancelled"
    assert api.post(f"{URL}{pk}/cancel/").json()["status"] == "cancelled"


def test_schema_documents_the_multipart_upload(client):
    r = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert r.status_code == 200
    schema = r.json()
    post_op = schema["paths"]["/api/v1/datasets/"]["post"]
    assert "multipart/form-data" in post_op["requestBody"]["content"]
    assert "202" in post_op["responses"]
    assert "/api/v1/datasets/{id}/report.csv" in schema["paths"]
    assert "/api/v1/datasets/{id}/items/" in schema["paths"]
