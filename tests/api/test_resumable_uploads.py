"""tus 1.0.0 at /api/v1/uploads/: creation, HEAD offset, PATCH append, resume after a broken connection,
wrong offset 409, termination, expiration, limits, privacy; datasets made from finished uploads."""
from __future__ import annotations

import base64
import io
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from datasets_app.models import Dataset, ResumableUpload
from tests.api.dataset_uploads import clean_files, vqa2_files

pytestmark = pytest.mark.django_db

URL = "/api/v1/uploads/"
TUS = {"HTTP_TUS_RESUMABLE": "1.0.0"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def create(api, length, filename="images.zip", **extra):
    headers = {**TUS, "HTTP_UPLOAD_LENGTH": str(length), "HTTP_UPLOAD_METADATA": f"filename {b64(filename)},filetype {b64('application/zip')}",
               **extra}
    return api.post(URL, **headers)


def patch(api, location, offset, data, **extra):
    return api.generic("PATCH", location, data, content_type="application/offset+octet-stream",
                       **{**TUS, "HTTP_UPLOAD_OFFSET": str(offset), **extra})


def head(api, location):
    return api.head(location, **TUS)


class BrokenInput:
    """A request body whose connection drops after ``keep`` bytes (what a server sees when a client vanishes)."""

    def __init__(self, data: bytes, keep: int):
        self._buf, self._left = io.BytesIO(data[:keep]), keep

    def read(self, n=-1):
        chunk = self._buf.read(n if n is not None and n >= 0 else self._left)
        self._left -= len(chunk)
        if not chunk:
            raise OSError("connection reset by peer")
        return chunk

    readline = read


def test_options_advertise_version_extensions_and_max_size(client_for, owner, settings):
    settings.RESUMABLE_UPLOAD_MAX_BYTES = 12345
    r = client_for(owner).options(URL)
    assert r.status_code == 204
    assert r["Tus-Resumable"] == "1.0.0" and r["Tus-Version"] == "1.0.0"
    assert set(r["Tus-Extension"].split(",")) == {"creation", "termination", "expiration"}
    assert r["Tus-Max-Size"] == "12345"


def test_creation_head_patch_and_complete(client_for, owner):
    api = client_for(owner)
    data = bytes(range(256)) * 40  # 10,240 bytes
    r = create(api, len(data))
    assert r.status_code == 201, r.content
    location = r["Location"]
    uid = location.rstrip("/").rsplit("/", 1)[-1]
    assert location.endswith(f"/api/v1/uploads/{uid}/") and r["Tus-Resumable"] == "1.0.0" and r["Upload-Expires"]
    h = head(api, location)
    assert h.status_code == 200 and h["Upload-Offset"] == "0" and h["Upload-Length"] == str(len(data))
    assert h["Cache-Control"] == "no-store"
    r = patch(api, location, 0, data[:4000])
    assert r.status_code == 204 and r["Upload-Offset"] == "4000"
    r = patch(api, location, 4000, data[4000:])
    assert r.status_code == 204 and r["Upload-Offset"] == str(len(data))
    up = ResumableUpload.objects.get(pk=uid)
    assert up.is_complete and up.filename == "images.zip" and up.metadata["filetype"] == "application/zip"
    with default_storage.open(up.storage_name, "rb") as fh:
        assert fh.read() == data


def test_interrupted_patch_keeps_what_arrived_and_resumes_from_the_server_offset(client_for, owner):
    api = client_for(owner)
    data = b"0123456789abcdef" * 1000
    location = create(api, len(data))["Location"]
    # the connection drops after 5,000 of the 16,000 bytes of one PATCH
    r = api.generic("PATCH", location, b"", content_type="application/offset+octet-stream",
                    **{**TUS, "HTTP_UPLOAD_OFFSET": "0", "CONTENT_LENGTH": str(len(data)),
                       "wsgi.input": BrokenInput(data, 5000)})
    assert r.status_code == 204 and r["Upload-Offset"] == "5000"
    offset = int(head(api, location)["Upload-Offset"])
    assert offset == 5000
    assert patch(api, location, 0, data).status_code == 409  # starting over is refused: resume instead
    r = patch(api, location, offset, data[offset:])
    assert r.status_code == 204 and r["Upload-Offset"] == str(len(data))
    up = ResumableUpload.objects.get()
    with default_storage.open(up.storage_name, "rb") as fh:
        assert fh.read() == data


def test_protocol_errors_are_specific(client_for, owner):
    api = client_for(owner)
    location = create(api, 10)["Location"]
    r = api.head(location)  # no Tus-Resumable
    assert r.status_code == 412 and r["Tus-Version"] == "1.0.0"
    r = patch(api, location, 3, b"abc")
    assert r.status_code == 409 and "does not match the 0 bytes" in r.json()["detail"]
    r = api.generic("PATCH", location, b"abc", content_type="text/plain", **{**TUS, "HTTP_UPLOAD_OFFSET": "0"})
    assert r.status_code == 415
    r = patch(api, location, 0, b"x" * 11)
    assert r.status_code == 413 and "past the declared length" in r.json()["detail"]
    r = api.generic("PATCH", location, b"abc", content_type="application/offset+octet-stream", **TUS)
    assert r.status_code == 400 and "Upload-Offset" in r.json()
    assert api.post(URL, **TUS).status_code == 400  # no Upload-Length (deferred length is not offered)
    assert create(api, 0).status_code == 400
    r = api.post(URL, **{**TUS, "HTTP_UPLOAD_LENGTH": "5", "HTTP_UPLOAD_METADATA": "filename not*base64"})
    assert r.status_code == 400 and "base64" in str(r.json())
    assert head(api, "/api/v1/uploads/does-not-exist/").status_code == 404
    assert int(head(api, location)["Upload-Offset"]) == 0  # nothing was written by the refused requests


def test_termination(client_for, owner):
    api = client_for(owner)
    location = create(api, 10)["Location"]
    patch(api, location, 0, b"hello")
    up = ResumableUpload.objects.get()
    assert default_storage.exists(up.storage_name)
    r = api.delete(location, **TUS)
    assert r.status_code == 204
    assert not ResumableUpload.objects.exists() and not default_storage.exists(up.storage_name)
    assert head(api, location).status_code == 404 and api.delete(location, **TUS).status_code == 404


def test_expiration(client_for, owner, settings):
    settings.RESUMABLE_UPLOAD_EXPIRY_HOURS = 2
    api = client_for(owner)
    r = create(api, 10)
    location = r["Location"]
    up = ResumableUpload.objects.get()
    assert timedelta(hours=1.9) < up.expires_at - timezone.now() <= timedelta(hours=2)
    ResumableUpload.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert head(api, location).status_code == 404
    assert patch(api, location, 0, b"abc").status_code == 404
    create(api, 5)  # creating another purges expired uploads, bytes included
    assert not ResumableUpload.objects.filter(pk=up.pk).exists() and not default_storage.exists(up.storage_name)


def test_per_user_limits(client_for, owner, other_user, settings):
    settings.RESUMABLE_UPLOAD_MAX_BYTES = 1000
    settings.RESUMABLE_UPLOADS_PER_USER = 2
    api = client_for(owner)
    r = create(api, 1001)
    assert r.status_code == 413 and "1,000 bytes" in r.json()["detail"]
    assert create(api, 10).status_code == 201 and create(api, 10).status_code == 201
    r = create(api, 10)
    assert r.status_code == 429 and "2 unfinished uploads" in r.json()["detail"]
    assert create(client_for(other_user), 10).status_code == 201  # the limit is per user


def test_uploads_are_private(client_for, owner, other_user, project):
    mine, theirs = client_for(owner), client_for(other_user)
    location = create(mine, 10)["Location"]
    patch(mine, location, 0, b"0123456789")
    assert head(theirs, location).status_code == 404
    assert theirs.get(location, **TUS).status_code == 404
    assert patch(theirs, location, 10, b"x").status_code == 404
    assert theirs.delete(location, **TUS).status_code == 404
    assert client_for(None).head(location, **TUS).status_code == 401  # no credentials
    assert client_for(None).post(URL, **{**TUS, "HTTP_UPLOAD_LENGTH": "5"}).status_code == 401
    assert ResumableUpload.objects.count() == 1


def _upload_file(api, name, data):
    location = create(api, len(data), filename=name)["Location"]
    assert patch(api, location, 0, data).status_code == 204
    return location.rstrip("/").rsplit("/", 1)[-1]


def test_dataset_from_finished_uploads_is_moved_not_copied_and_cleaned(
        client_for, owner, other_user, project, run_jobs, django_capture_on_commit_callbacks):
    api = client_for(owner)
    images, questions = clean_files()
    zip_id = _upload_file(api, "shapes.zip", images.read())
    csv_id = _upload_file(api, "questions.csv", questions.read())
    zip_part = ResumableUpload.objects.get(pk=zip_id).storage_name
    # another user cannot use them; an unfinished upload is refused with its progress
    r = client_for(other_user).post("/api/v1/datasets/", {"project": project.pk, "images_upload": zip_id,
                                                          "questions_upload": csv_id}, format="json")
    assert r.status_code == 404  # not a member of the project
    partial = create(api, 100, filename="more.zip")["Location"].rstrip("/").rsplit("/", 1)[-1]
    r = api.post("/api/v1/datasets/", {"project": project.pk, "images_upload": partial, "questions_upload": csv_id},
                 format="json")
    assert r.status_code == 400 and "not finished: 0 of 100 bytes" in r.json()["detail"]
    r = api.post("/api/v1/datasets/", {"project": project.pk, "images_upload": zip_id, "images": clean_files()[0],
                                       "questions_upload": csv_id}, format="multipart")
    assert r.status_code == 400 and "not both" in str(r.json())
    with django_capture_on_commit_callbacks(execute=True):
        r = api.post("/api/v1/datasets/", {"project": project.pk, "name": "resumed",
                                           "images_upload": f"/api/v1/uploads/{zip_id}/",  # a whole Location works too
                                           "questions_upload": csv_id}, format="json")
    assert r.status_code == 202, r.content
    ds = Dataset.objects.get(pk=r.json()["id"])
    assert ds.images_original_name == "shapes.zip" and ds.questions_original_name == "questions.csv"
    assert not default_storage.exists(zip_part) and default_storage.exists(ds.images_file.name)
    assert not ResumableUpload.objects.filter(pk__in=[zip_id, csv_id]).exists()  # consumed
    run_jobs()
    ds.refresh_from_db()
    assert ds.status == "succeeded" and ds.counts["rows_kept"] == 3, ds.error
    r = api.post("/api/v1/datasets/", {"project": project.pk, "images_upload": zip_id, "questions_upload": csv_id},
                 format="json")
    assert r.status_code == 400 and "already used" in r.json()["detail"]


def _upload_for(api, name, data, project_id):
    """A finished upload sent for ``project_id`` (tus metadata ``project``); returns (id, stored name)."""
    r = create(api, len(data), filename=name,
               HTTP_UPLOAD_METADATA=f"filename {b64(name)},project {b64(str(project_id))}")
    assert r.status_code == 201, r.content
    assert patch(api, r["Location"], 0, data).status_code == 204
    uid = r["Location"].rstrip("/").rsplit("/", 1)[-1]
    return uid, ResumableUpload.objects.get(pk=uid).storage_name


def test_upload_sent_for_its_project_is_taken_where_it_lies(
        client_for, owner, project, run_jobs, monkeypatch, django_capture_on_commit_callbacks):
    """With ``project`` in the metadata the bytes go under that project's upload names from the start, and its
    dataset takes them there: no rename, no copy (what saves a server-side copy of many GB on S3)."""
    from datasets_app import services
    from piggyback.project_services import create_project

    api = client_for(owner)
    images, questions = clean_files()
    zip_id, zip_name = _upload_for(api, "shapes.ZIP", images.read(), project.pk)
    csv_id, csv_name = _upload_for(api, "questions.csv", questions.read(), project.pk)
    assert zip_name == f"projects/{project.pk}/uploads/{zip_id}.zip" and csv_name.endswith(f"/{csv_id}.csv")

    def no_move(*a, **kw):
        raise AssertionError("the upload was moved or copied")

    monkeypatch.setattr(services.files, "move", no_move)
    with django_capture_on_commit_callbacks(execute=True):
        r = api.post("/api/v1/datasets/", {"project": project.pk, "images_upload": zip_id, "questions_upload": csv_id},
                     format="json")
    assert r.status_code == 202, r.content
    monkeypatch.undo()
    ds = Dataset.objects.get(pk=r.json()["id"])
    assert (ds.images_file.name, ds.questions_file.name) == (zip_name, csv_name)
    assert not ResumableUpload.objects.exists()
    run_jobs()
    ds.refresh_from_db()
    assert ds.status == "succeeded" and ds.counts["rows_kept"] == 3, ds.error

    # sent for one project, used in another of the user's projects: moved under that project's names
    second = create_project(owner, "Second", "")
    images, questions = clean_files()
    zip_id, zip_name = _upload_for(api, "shapes.zip", images.read(), project.pk)
    r = api.post("/api/v1/datasets/", {"project": second.pk, "images": clean_files()[0], "questions_upload": csv_id},
                 format="multipart")
    assert r.status_code == 400  # csv_id was used above
    r = api.post("/api/v1/datasets/", {"project": second.pk, "images_upload": zip_id, "questions": questions},
                 format="multipart")
    assert r.status_code == 202, r.content
    moved = Dataset.objects.get(pk=r.json()["id"]).images_file.name
    assert moved.startswith(f"projects/{second.pk}/uploads/") and default_storage.exists(moved)
    assert not default_storage.exists(zip_name)


def test_project_in_the_metadata_must_be_one_where_the_user_is_an_editor(client_for, owner, project, members):
    api = client_for(owner)
    for raw, words in (("abc", "a whole number"), ("-3", "a whole number"), (str(2**63), "a whole number"),
                       ("²", "a whole number"), ("0", "a whole number"),
                       ("999999", "not one of your projects")):
        r = create(api, 10, HTTP_UPLOAD_METADATA=f"filename {b64('a.zip')},project {b64(raw)}")
        assert r.status_code == 400 and words in str(r.json()), (raw, r.content)
    viewer = client_for(members["viewer"])
    r = create(viewer, 10, HTTP_UPLOAD_METADATA=f"filename {b64('a.zip')},project {b64(str(project.pk))}")
    assert r.status_code == 400 and "you are not an editor there" in str(r.json())
    assert not ResumableUpload.objects.exists()
    r = create(client_for(members["editor"]), 10,
               HTTP_UPLOAD_METADATA=f"filename {b64('a.zip')},project {b64(str(project.pk))}")
    assert r.status_code == 201
    r = create(api, 10, HTTP_UPLOAD_METADATA=f"filename {b64('a.zip')},project {b64('')}")  # empty: no project
    assert r.status_code == 201
    assert ResumableUpload.objects.get(pk=r["Location"].rstrip("/").rsplit("/", 1)[-1]).storage_name.startswith(
        "uploads/resumable/")


def test_one_upload_cannot_be_two_of_the_files(client_for, owner, project):
    """The questions and the annotations of a VQAv2 dataset are both JSON, so the same upload named twice passes
    every file check: moved, the second move failed; taken in place, it made a dataset whose questions file was
    its annotations file. Now it is a 400 naming both, and nothing stored is lost."""
    api = client_for(owner)
    zip_file, questions, _ = vqa2_files()
    zip_id, zip_name = _upload_for(api, "coco.zip", zip_file.read(), project.pk)
    json_id, json_name = _upload_for(api, "v2_questions.json", questions.read(), project.pk)
    r = api.post("/api/v1/datasets/", {"project": project.pk, "images_upload": zip_id, "questions_upload": json_id,
                                       "annotations_upload": json_id}, format="json")
    assert r.status_code == 400, r.content
    assert "the questions and the annotations are the same upload" in r.json()["detail"].lower()
    assert ResumableUpload.objects.filter(pk__in=[zip_id, json_id]).count() == 2
    assert default_storage.exists(zip_name) and default_storage.exists(json_name) and not Dataset.objects.exists()


def test_a_failure_after_taking_an_upload_in_place_keeps_the_upload(owner, project, monkeypatch):
    from datasets_app import services

    api_files = clean_files()
    from rest_framework.test import APIClient
    api = APIClient()
    api.force_authenticate(owner)
    zip_id, zip_name = _upload_for(api, "shapes.zip", api_files[0].read(), project.pk)

    def broken_queue(*a, **kw):
        raise RuntimeError("Redis went away")

    monkeypatch.setattr(services.jobs, "enqueue", broken_queue)
    with pytest.raises(RuntimeError):
        services.create_dataset(owner, project, "x", images=services.claim_upload(owner, zip_id, "images"),
                                questions=clean_files()[1])
    assert ResumableUpload.objects.filter(pk=zip_id).exists() and default_storage.exists(zip_name)
    assert not Dataset.objects.exists()


def test_an_upload_whose_bytes_were_removed_gets_a_clear_message(client_for, owner, project):
    api = client_for(owner)
    images, questions = clean_files()
    zip_id, zip_name = _upload_for(api, "shapes.zip", images.read(), project.pk)
    default_storage.delete(zip_name)  # e.g. the project's files were removed while the upload waited
    r = api.post("/api/v1/datasets/", {"project": project.pk, "images_upload": zip_id, "questions": questions},
                 format="multipart")
    assert r.status_code == 400 and "no longer in the storage" in r.json()["detail"], r.content
