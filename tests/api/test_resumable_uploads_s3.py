"""tus 1.0.0 at /api/v1/uploads/ with S3 storage (moto's in-process S3): the bytes go into the bucket as a
multipart upload, the unfinished tail waits in a small object of the bucket, odd-sized and broken-off PATCHes
keep Upload-Offset = what is stored, completion leaves one object and nothing pending, termination and expiry
abort the multipart upload, and a dataset is made from finished uploads (server-side copy)."""
from __future__ import annotations

import hashlib
import os
from datetime import timedelta

import pytest
from django.utils import timezone

from datasets_app.models import Dataset, ResumableUpload
from tests.api.dataset_uploads import clean_files
from tests.api.test_resumable_uploads import TUS, BrokenInput, create, head, patch

pytestmark = pytest.mark.django_db

BUCKET = "piggyback-tus"
MIB = 1024 * 1024
PART = 5 * MIB  # S3's smallest part: the test's part size, so the data stays small


@pytest.fixture
def s3(settings, tmp_path):
    """The default storage on a bucket of moto's in-process S3 (like STORAGE_BACKEND=s3); yields a client."""
    import boto3
    from boto3.s3.transfer import TransferConfig
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        settings.STORAGES = {**settings.STORAGES, "default": {
            "BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
                "bucket_name": BUCKET, "region_name": "us-east-1", "access_key": "test", "secret_key": "test",
                "file_overwrite": False, "default_acl": "private", "max_memory_size": MIB,
                "transfer_config": TransferConfig(multipart_threshold=PART, multipart_chunksize=PART)}}}
        settings.WORKER_CACHE_DIR = tmp_path / "cache"
        settings.RESUMABLE_UPLOAD_PART_BYTES = PART
        yield client


def keys(client, prefix=""):
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", ()))


def pending(client):
    return client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])


def uid_of(location):
    return location.rstrip("/").rsplit("/", 1)[-1]


def test_odd_chunks_broken_patch_and_completion_go_straight_into_the_bucket(
        s3, client_for, owner, django_capture_on_commit_callbacks):
    api = client_for(owner)
    data = os.urandom(13 * MIB + 12345)
    r = create(api, len(data))
    assert r.status_code == 201, r.content
    location = r["Location"]
    up = ResumableUpload.objects.get(pk=uid_of(location))
    assert up.multipart_id and [u["Key"] for u in pending(s3)] == [up.storage_name]

    def send(offset, chunk):
        with django_capture_on_commit_callbacks(execute=True):  # the replaced tail is deleted after commit
            return patch(api, location, offset, chunk)

    r = send(0, data[:3 * MIB])  # less than a part: all of it waits in the tail object
    assert r.status_code == 204 and r["Upload-Offset"] == str(3 * MIB)
    up.refresh_from_db()
    assert up.parts == [] and keys(s3, f"{up.storage_name}.tail/") == [up.tail_name]
    r = send(3 * MIB, data[3 * MIB:7 * MIB])  # the tail + 2 MiB fill part 1; 2 MiB wait
    assert r.status_code == 204 and r["Upload-Offset"] == str(7 * MIB)
    up.refresh_from_db()
    assert [(p["n"], p["size"]) for p in up.parts] == [(1, PART)]
    assert keys(s3, f"{up.storage_name}.tail/") == [up.tail_name]  # the old tail is gone
    assert s3.head_object(Bucket=BUCKET, Key=up.tail_name)["ContentLength"] == 2 * MIB

    # the connection drops 4 MiB + 777 bytes into a PATCH of the rest: part 2 went up, 1 MiB + 777 wait
    with django_capture_on_commit_callbacks(execute=True):
        r = api.generic("PATCH", location, b"", content_type="application/offset+octet-stream",
                        **{**TUS, "HTTP_UPLOAD_OFFSET": str(7 * MIB), "CONTENT_LENGTH": str(len(data) - 7 * MIB),
                           "wsgi.input": BrokenInput(data[7 * MIB:], 4 * MIB + 777)})
    offset = 11 * MIB + 777
    assert r.status_code == 204 and r["Upload-Offset"] == str(offset)
    assert head(api, location)["Upload-Offset"] == str(offset)
    up.refresh_from_db()
    assert [(p["n"], p["size"]) for p in up.parts] == [(1, PART), (2, PART)]
    assert s3.head_object(Bucket=BUCKET, Key=up.tail_name)["ContentLength"] == MIB + 777

    r = patch(api, location, 7 * MIB, data[7 * MIB:])  # starting the chunk over is refused: resume instead
    assert r.status_code == 409 and f"{offset:,} bytes the server holds" in r.json()["detail"]
    r = send(offset, data[offset:])
    assert r.status_code == 204 and r["Upload-Offset"] == str(len(data))

    up.refresh_from_db()
    assert up.is_complete and [p["size"] for p in up.parts] == [PART, PART, len(data) - 2 * PART]
    body = s3.get_object(Bucket=BUCKET, Key=up.storage_name)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
    assert keys(s3) == [up.storage_name] and pending(s3) == []  # no tail, no unfinished multipart upload
    assert patch(api, location, len(data), b"x").status_code == 413  # nothing goes past the length
    r = patch(api, location, len(data), b"")  # an empty PATCH at the end changes nothing
    assert r.status_code == 204 and r["Upload-Offset"] == str(len(data)) and keys(s3) == [up.storage_name]


def test_small_upload_is_one_last_part(s3, client_for, owner):
    api = client_for(owner)
    location = create(api, 10)["Location"]
    assert patch(api, location, 0, b"01234").status_code == 204
    r = patch(api, location, 5, b"56789")
    assert r.status_code == 204 and r["Upload-Offset"] == "10"
    up = ResumableUpload.objects.get()
    assert s3.get_object(Bucket=BUCKET, Key=up.storage_name)["Body"].read() == b"0123456789"
    assert keys(s3) == [up.storage_name] and pending(s3) == []


def test_termination_and_expiry_abort_the_multipart_upload(s3, client_for, owner):
    api = client_for(owner)
    location = create(api, 8 * MIB)["Location"]
    assert patch(api, location, 0, os.urandom(6 * MIB)).status_code == 204  # one part + a 1 MiB tail
    assert len(pending(s3)) == 1 and len(keys(s3)) == 1  # the tail (the object exists only when complete)
    assert api.delete(location, **TUS).status_code == 204
    assert pending(s3) == [] and keys(s3) == [] and not ResumableUpload.objects.exists()
    assert head(api, location).status_code == 404

    location = create(api, 10)["Location"]
    patch(api, location, 0, b"abc")
    ResumableUpload.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert create(api, 5).status_code == 201  # creating another purges the expired one
    assert not ResumableUpload.objects.filter(pk=uid_of(location)).exists()
    assert [u["Key"] for u in pending(s3)] == [ResumableUpload.objects.get().storage_name] and keys(s3) == []

    # the bucket's clean-up (a lifecycle rule) removed the upload's bytes: a clear 404, not a 500
    up = ResumableUpload.objects.get()
    assert patch(api, f"/api/v1/uploads/{up.pk}/", 0, b"abc").status_code == 204
    up.refresh_from_db()
    s3.delete_object(Bucket=BUCKET, Key=up.tail_name)
    s3.abort_multipart_upload(Bucket=BUCKET, Key=up.storage_name, UploadId=up.multipart_id)
    r = patch(api, f"/api/v1/uploads/{up.pk}/", 3, b"de")
    assert r.status_code == 404 and "start the upload again" in r.json()["detail"]
    assert not ResumableUpload.objects.exists() and keys(s3) == []


def test_dataset_from_uploads_in_the_bucket(s3, client_for, owner, project, run_jobs, monkeypatch,
                                            django_capture_on_commit_callbacks):
    api = client_for(owner)
    images, questions = clean_files()
    ids, sent = {}, {}
    for key, upload in (("images", images), ("questions", questions)):
        data = sent[key] = upload.read()
        location = create(api, len(data), filename=upload.name)["Location"]
        assert patch(api, location, 0, data).status_code == 204
        ids[key] = uid_of(location)
    stored = [u.storage_name for u in ResumableUpload.objects.all()]
    from storages.backends.s3 import S3File

    def whole_download(*a, **kw):
        raise AssertionError("the web process downloaded a whole upload")

    monkeypatch.setattr(S3File, "file", property(whole_download))  # the checks read the first bytes by ranged GETs
    with django_capture_on_commit_callbacks(execute=True):
        r = api.post("/api/v1/datasets/", {"project": project.pk, "name": "from-s3", "images_upload": ids["images"],
                                           "questions_upload": ids["questions"]}, format="json")
    assert r.status_code == 202, r.content
    monkeypatch.undo()
    ds = Dataset.objects.get(pk=r.json()["id"])
    bucket = keys(s3)
    assert ds.images_file.name in bucket and ds.questions_file.name in bucket
    assert not set(stored) & set(bucket) and not ResumableUpload.objects.exists()  # moved, not copied
    assert s3.get_object(Bucket=BUCKET, Key=ds.images_file.name)["Body"].read() == sent["images"]
    run_jobs()
    ds.refresh_from_db()
    assert ds.status == "succeeded" and ds.counts["rows_kept"] == 3, ds.error


def test_one_part_in_memory_at_a_time(monkeypatch):
    """45 MiB through append_parts with 8 MiB parts: parts go up as they fill, Python's peak stays about one part
    (a recording stand-in for the bucket, so the bucket's own copy of the bytes is not counted)."""
    import tracemalloc

    from piggyback import files

    sent = []

    class Client:
        def upload_part(self, Body, PartNumber, **kw):
            sent.append((PartNumber, len(Body)))
            return {"ETag": f'"{PartNumber}"'}

        def complete_multipart_upload(self, MultipartUpload, **kw):
            sent.append(("complete", [p["PartNumber"] for p in MultipartUpload["Parts"]]))

    class Bucket:
        client, bucket = Client(), BUCKET

        def key(self, name):
            return name

        def delete_prefix(self, prefix):
            sent.append(("delete", prefix))

    class Zeros:
        def __init__(self, n):
            self.left = n

        def read(self, n):
            n = min(n, self.left)
            self.left -= n
            return bytes(n)

    monkeypatch.setattr(files, "_s3", Bucket)
    size = 45 * MIB + 123
    tracemalloc.start()
    try:
        written, parts, tail = files.append_parts("u.part", "id", [], "", 0, Zeros(size), size, length=size,
                                                  part_bytes=8 * MIB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert written == size and tail == "" and [p["size"] for p in parts] == [8 * MIB] * 5 + [5 * MIB + 123]
    assert sent[-2:] == [("complete", [1, 2, 3, 4, 5, 6]), ("delete", "u.part.tail")]
    assert peak < 10 * MIB, peak
    # the part size: at least S3's 5 MiB, and big enough for S3's 10,000 parts
    assert files.part_size(10, 1024) == 5 * MIB and files.part_size(10 * MIB, 8 * MIB) == 8 * MIB
    big = 200 * 1024**3
    assert files.part_size(big, 8 * MIB) > 8 * MIB and files.part_size(big, 8 * MIB) * 10_000 >= big


def test_upload_sent_for_its_project_stays_where_the_bucket_has_it(s3, client_for, owner, project, run_jobs,
                                                                     monkeypatch, django_capture_on_commit_callbacks):
    """With ``project`` in the metadata the multipart upload is made at the dataset's own key: the dataset takes
    the object as it is, with no server-side copy (which, for a VQAv2-sized ZIP, ran inside the request)."""
    import base64

    from datasets_app import services

    api = client_for(owner)
    images, questions = clean_files()
    ids, sent = {}, {}
    for key, upload in (("images", images), ("questions", questions)):
        data = sent[key] = upload.read()
        meta = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}"
                        for k, v in (("filename", upload.name), ("project", str(project.pk))))
        location = create(api, len(data), filename=upload.name, HTTP_UPLOAD_METADATA=meta)["Location"]
        assert patch(api, location, 0, data).status_code == 204
        ids[key] = uid_of(location)
    stored = {u.pk: u.storage_name for u in ResumableUpload.objects.all()}
    assert all(name.startswith(f"projects/{project.pk}/uploads/") for name in stored.values())
    assert keys(s3) == sorted(stored.values()) and pending(s3) == []  # completed, no tail left

    def no_copy(*a, **kw):
        raise AssertionError("the object was copied")

    monkeypatch.setattr(services.files, "move", no_copy)
    with django_capture_on_commit_callbacks(execute=True):
        r = api.post("/api/v1/datasets/", {"project": project.pk, "images_upload": ids["images"],
                                           "questions_upload": ids["questions"]}, format="json")
    assert r.status_code == 202, r.content
    monkeypatch.undo()
    ds = Dataset.objects.get(pk=r.json()["id"])
    assert (ds.images_file.name, ds.questions_file.name) == (stored[ids["images"]], stored[ids["questions"]])
    assert s3.get_object(Bucket=BUCKET, Key=ds.images_file.name)["Body"].read() == sent["images"]
    run_jobs()
    ds.refresh_from_db()
    assert ds.status == "succeeded" and ds.counts["rows_kept"] == 3, ds.error
