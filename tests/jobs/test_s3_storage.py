"""STORAGE_BACKEND=s3 end to end, on a real S3-protocol server (moto's server mode in its own process).

gunicorn (the web) and a `manage.py rqworker` process (the workers) run as real subprocesses against one
bucket, each with its OWN local folders (MEDIA_ROOT, WORKER_CACHE_DIR, PIGGYBACK_VAR_DIR): nothing is shared
but PostgreSQL, Redis and the bucket. Through the HTTP API with a token: upload -> cleaning -> training ->
export -> one question -> batch evaluation -> every download, then the bucket is listed with boto3 and both
processes' MEDIA_ROOT must still be empty.
"""
from __future__ import annotations

import csv
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests import workers
from tests.s3server import HOST, S3Server, free_port

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "piggyback-e2e"
MULTIPART = 5 * 1024 * 1024  # S3's smallest part size: the upload below is sent in parts
TRAIN = {"epochs": 2, "batch_size": 16, "val_fraction": 0.2, "patience": 0}


# ------------------------------------------------------------------------------------------ HTTP
class Api:
    """Token-authenticated HTTP client (stdlib); ``call`` returns (status, headers, body bytes)."""

    def __init__(self, port: int, token: str = "", session: str = ""):
        self.port, self.token, self.session = port, token, session

    def call(self, method: str, path: str, *, json_body=None, fields=None, files=None, timeout=120):
        headers, body = {}, None
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        if self.session:
            headers["Cookie"] = f"sessionid={self.session}"
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        elif fields is not None or files is not None:
            boundary = uuid.uuid4().hex
            parts = []
            for k, v in (fields or {}).items():
                parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
            for k, (filename, data) in (files or {}).items():
                parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{filename}"\r\n'
                             f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
            body = b"".join(parts) + f"--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, expect: int = 200, **kw):
        status, _, body = self.call(method, path, **kw)
        assert status == expect, f"{method} {path} -> {status}: {body[:2000]!r}"
        return json.loads(body)

    def download(self, path: str, content_type: str = "") -> bytes:
        status, headers, body = self.call("GET", path)
        assert status == 200, f"GET {path} -> {status}: {body[:2000]!r}"
        assert body, f"GET {path} answered an empty body"
        if content_type:
            assert headers.get("Content-Type", "").startswith(content_type), (path, headers)
        if "Content-Length" in headers:
            assert int(headers["Content-Length"]) == len(body), (path, headers)
        return body

    def wait_done(self, path: str, logs, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.json("GET", path)
            if row["status"] in ("succeeded", "failed", "cancelled"):
                assert row["status"] == "succeeded", f"{path}: {row.get('error')}\n{row.get('traceback')}\n{logs()}"
                return row
            time.sleep(0.5)
        raise AssertionError(f"{path} did not finish in {timeout} s\n{logs()}")


# ------------------------------------------------------------------------------------------ processes
def _start(cmd, env, log: Path) -> subprocess.Popen:
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _wait_healthy(port: int, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gunicorn exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if Api(port).call("GET", "/healthz", timeout=3)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"gunicorn did not become healthy:\n{log.read_text()[-3000:]}")


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server):
    s3_server.client().create_bucket(Bucket=BUCKET)
    yield s3_server
    client = s3_server.client()
    for key in s3_server.keys(BUCKET):
        client.delete_object(Bucket=BUCKET, Key=key)
    client.delete_bucket(Bucket=BUCKET)


def _sample(folder: Path, split: str, images: int, seed: int, padding: int = 0) -> tuple[bytes, bytes]:
    """An easy-VQA images ZIP + questions CSV; ``padding`` bytes of a non-image member (ignored by the cleaning)
    make the ZIP large enough for a multipart upload."""
    from gpu_worker.sample_data import build_sample_zip

    folder.mkdir(parents=True, exist_ok=True)
    build_sample_zip(folder / "images.zip", folder / "questions.csv", split=split, max_images=images, seed=seed)
    if padding:
        with zipfile.ZipFile(folder / "images.zip", "a", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr("notes/readme.bin", os.urandom(padding))
    return (folder / "images.zip").read_bytes(), (folder / "questions.csv").read_bytes()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_whole_path_through_an_s3_bucket_with_separate_local_folders(s3, owner, tmp_path, redis_conn):
    from django.contrib.auth import get_user_model
    from django.test import Client
    from rest_framework.authtoken.models import Token

    from training_app.registry_sync import sync_models

    started = time.monotonic()
    sync_models()
    token = Token.objects.create(user=owner).key
    browser = Client()
    browser.force_login(get_user_model().objects.get(pk=owner.pk))
    session = browser.cookies["sessionid"].value

    base = {**os.environ, "DATABASE_URL": workers.test_db_url(), "REDIS_URL": os.environ["REDIS_URL"], **s3.env(BUCKET),
            "PYTHONUNBUFFERED": "1", "JOB_HEARTBEAT_INTERVAL": "0.5", "PIGGYBACK_CPU_ONLY": "1",
            "PIGGYBACK_TORCH_THREADS": "1", "DJANGO_ENV": "development", "LOG_LEVEL": "WARNING",
            "AWS_S3_MULTIPART_THRESHOLD": str(MULTIPART)}
    local = {role: {"MEDIA_ROOT": tmp_path / role / "media", "WORKER_CACHE_DIR": tmp_path / role / "cache",
                    "PIGGYBACK_VAR_DIR": tmp_path / role / "var"} for role in ("web", "worker")}
    port = free_port()
    web_log, worker_log = tmp_path / "web.log", tmp_path / "worker.log"
    web = _start([sys.executable, "-m", "gunicorn", "piggyback.wsgi:application", "-b", f"{HOST}:{port}", "-w", "2",
                  "--timeout", "180"], {**base, **{k: str(v) for k, v in local["web"].items()}}, web_log)
    worker = _start([sys.executable, "manage.py", "rqworker", "default", "gpu"],
                    {**base, **{k: str(v) for k, v in local["worker"].items()}}, worker_log)

    marks = [("start", time.monotonic())]

    def mark(label):
        marks.append((label, time.monotonic()))

    def logs() -> str:
        return (f"--- web\n{web_log.read_text()[-4000:]}\n--- worker\n{worker_log.read_text()[-4000:]}\n"
                f"--- moto\n{s3.log_path.read_text()[-2000:]}")

    try:
        _wait_healthy(port, web, web_log)
        api, page = Api(port, token), Api(port, session=session)
        project = api.json("POST", "/api/v1/projects/", 201, json_body={"name": "S3 project", "description": ""})["id"]

        mark("web up")
        # 1. upload -> cleaning (the worker reads the uploads from the bucket, stores the cleaned images there)
        images_zip, questions_csv = _sample(tmp_path / "train", "train", 24, 3, padding=MULTIPART + 1024 * 1024)
        ds = api.json("POST", "/api/v1/datasets/", 202, fields={"project": project, "name": "shapes"},
                      files={"images": ("shapes.zip", images_zip), "questions": ("shapes.csv", questions_csv)})
        ds = api.wait_done(f"/api/v1/datasets/{ds['id']}/", logs)
        assert ds["counts"]["images_kept"] == 24
        report = api.download(f"/api/v1/datasets/{ds['id']}/report.csv", "text/csv")
        assert report.decode("utf-8-sig").splitlines()[0].startswith("row")
        items = api.json("GET", f"/api/v1/datasets/{ds['id']}/items/")["results"]
        thumb = api.download(f"/api/v1/datasets/{ds['id']}/items/{items[0]['id']}/image/")
        assert thumb[:8] == b"\x89PNG\r\n\x1a\n"
        assert page.download(urlsplit(items[1]["image_url"]).path)[:8] == b"\x89PNG\r\n\x1a\n"

        mark("upload+cleaning+downloads")
        # 2. training (inputs from the bucket into the worker's cache, outputs back to the bucket) -> export
        run = api.json("POST", "/api/v1/training-runs/", 202,
                       json_body={"dataset": ds["id"], "model": "baseline-rnn", "params": TRAIN})
        run = api.wait_done(f"/api/v1/training-runs/{run['id']}/", logs)
        assert run["vqa_accuracy"] is not None and "epoch 2/2" in run["log"]
        export = zipfile.ZipFile(io.BytesIO(api.download(f"/api/v1/training-runs/{run['id']}/export/",
                                                         "application/zip")))
        assert {"model/config.json", "metrics.json", "train.log", "README.txt"} <= set(export.namelist())

        mark("training+export")
        # 3. one question in the web process (the model comes from the bucket into the web's cache)
        test_zip, test_csv = _sample(tmp_path / "test", "test", 6, 5)
        first = next(csv.DictReader(io.StringIO(test_csv.decode("utf-8-sig"))))
        with zipfile.ZipFile(io.BytesIO(test_zip)) as zf:
            image = zf.read(next(n for n in zf.namelist() if Path(n).stem == Path(first["image"]).stem))
        pred = api.json("POST", f"/api/v1/training-runs/{run['id']}/predict/", 201,
                        fields={"question": first["question"]}, files={"image": ("shape.png", image)})
        assert pred["answer"] and pred["regions"]
        for which in ("image", "overlay", "heatmap"):
            png = api.download(f"/api/v1/predictions/{pred['id']}/files/{which}/", "image/png")
            assert png[:8] == b"\x89PNG\r\n\x1a\n", which
        assert pred["thumbnail"].endswith(f"/api/v1/predictions/{pred['id']}/files/thumbnail/")
        thumb = api.download(f"/api/v1/predictions/{pred['id']}/files/thumbnail/", "image/webp")
        assert thumb[:4] == b"RIFF" and thumb[8:12] == b"WEBP"   # made once at upload, stored in the bucket

        mark("one question+files")
        # 4. batch evaluation -> predictions CSV, annotated ZIP, a batch prediction's files
        ev = api.json("POST", "/api/v1/evaluations/", 201, fields={"project": project, "training_run": run["id"]},
                      files={"images": ("test.zip", test_zip), "questions": ("test.csv", test_csv)})
        ev = api.wait_done(f"/api/v1/evaluations/{ev['id']}/", logs)
        rows = list(csv.DictReader(io.StringIO(api.download(f"/api/v1/evaluations/{ev['id']}/predictions.csv",
                                                             "text/csv").decode("utf-8-sig"))))
        assert len(rows) == ev["metrics"]["count"] > 0
        annotated = zipfile.ZipFile(io.BytesIO(api.download(f"/api/v1/evaluations/{ev['id']}/annotated.zip",
                                                            "application/zip")))
        assert sum(n.endswith(".png") for n in annotated.namelist()) == len(rows)
        batch = api.json("GET", f"/api/v1/evaluations/{ev['id']}/predictions/")["results"][0]
        for which in ("image", "overlay"):
            assert api.download(f"/api/v1/predictions/{batch['id']}/files/{which}/", "image/png")[:4] == b"\x89PNG"
        assert api.download(f"/api/v1/predictions/{batch['id']}/files/thumbnail/", "image/webp")[8:12] == b"WEBP"

        mark("batch evaluation+downloads")
        # 5. the question history ZIP (a page: session cookie)
        history = zipfile.ZipFile(io.BytesIO(page.download("/evaluate/history/download.zip",
                                                                                    "application/zip")))
        assert "history.csv" in history.namelist() and len(history.namelist()) >= 3

        mark("history zip")
        # 6. everything is in the bucket, nothing in either process's MEDIA_ROOT
        keys = s3.keys(BUCKET)
        p, d, r, e = project, ds["id"], run["id"], ev["id"]
        must = [
            f"projects/{p}/datasets/{d}/images/",                     # cleaned images
            f"projects/{p}/runs/{r}/model/config.json",               # the fine-tuned model
            f"projects/{p}/runs/{r}/metrics.json",
            f"projects/{p}/runs/{r}/checkpoints/",
            f"projects/{p}/runs/{r}/export/piggyback-run-{r}.zip",
            f"projects/{p}/predictions/images/",                      # the single question's image
            f"projects/{p}/predictions/thumbs/",                      # and its thumbnail
            f"projects/{p}/overlays/",                                # its overlay + heat-map, the batch overlays
            f"projects/{p}/evaluations/{e}/predictions.csv",
            f"projects/{p}/evaluations/{e}/annotated.zip",
            f"projects/{p}/evaluations/{e}/images/",
            f"projects/{p}/evaluations/{e}/thumbs/",                  # thumbnails made at the evaluation's cleaning
        ]
        for prefix in must:
            assert any(k.startswith(prefix) for k in keys), f"nothing under {prefix} in the bucket: {keys[:50]}"
        assert sum(k.startswith(f"projects/{p}/datasets/{d}/images/") for k in keys) == 24
        uploads = [k for k in keys if k.startswith(f"projects/{p}/uploads/")]
        assert sorted(Path(k).suffix for k in uploads) == [".csv", ".csv", ".zip", ".zip"], uploads
        # the large upload went up in parts (a multipart object's ETag is "<md5 of the parts' md5s>-<parts>")
        sizes = {k: s3.client().head_object(Bucket=BUCKET, Key=k) for k in uploads if k.endswith(".zip")}
        big = max(sizes, key=lambda k: sizes[k]["ContentLength"])
        assert sizes[big]["ContentLength"] > MULTIPART and sizes[big]["ETag"].strip('"').endswith("-2"), sizes[big]
        for role in ("web", "worker"):
            assert _files_under(local[role]["MEDIA_ROOT"]) == [], f"{role} wrote into its MEDIA_ROOT"
        assert _files_under(local["worker"]["WORKER_CACHE_DIR"]), "the worker did not work from a local cache"
        mark("bucket listing")
        steps = ", ".join(f"{label} {t - marks[i][1]:.1f}" for i, (label, t) in enumerate(marks[1:]))
        print(f"S3 end to end: {len(keys)} objects, {time.monotonic() - started:.1f} s ({steps})")
    finally:
        _stop(worker)
        _stop(web)


# ------------------------------------------------------------------------------------------ piggyback.files on S3
@pytest.fixture
def s3_settings(s3, settings, tmp_path):
    """This process's default storage on the bucket (like STORAGE_BACKEND=s3), with its own cache folder."""
    from boto3.s3.transfer import TransferConfig

    env = s3.env(BUCKET)
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
        "bucket_name": BUCKET, "endpoint_url": env["AWS_S3_ENDPOINT_URL"], "region_name": env["AWS_S3_REGION_NAME"],
        "access_key": env["AWS_ACCESS_KEY_ID"], "secret_key": env["AWS_SECRET_ACCESS_KEY"],
        "addressing_style": "path", "file_overwrite": False, "default_acl": "private", "max_memory_size": 1024 * 1024,
        "transfer_config": TransferConfig(multipart_threshold=MULTIPART, multipart_chunksize=MULTIPART)}}}
    settings.WORKER_CACHE_DIR = tmp_path / "cache"
    return s3


def _peak(fn):
    """(result, peak bytes allocated by Python while ``fn`` ran)."""
    import tracemalloc

    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_large_files_go_up_in_parts_and_are_served_as_a_stream(s3_settings, tmp_path):
    import hashlib

    from django.core.files.storage import default_storage

    from piggyback import files

    size = 3 * MULTIPART + 12345
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(size))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    client = s3_settings.client()

    # a worker's result (save_local) and a web upload (Storage.save) are multipart uploads
    assert files.save_local(big, "projects/1/big.bin") == "projects/1/big.bin"
    head = client.head_object(Bucket=BUCKET, Key="projects/1/big.bin")
    assert head["ContentLength"] == size and head["ETag"].strip('"').endswith("-4"), head
    assert head["ContentType"] == "application/octet-stream"
    with open(big, "rb") as fh:
        default_storage.save("projects/1/upload.bin", fh)
    assert client.head_object(Bucket=BUCKET, Key="projects/1/upload.bin")["ETag"].strip('"').endswith("-4")
    # save_local replaces in place (one PUT, no delete + rename dance)
    files.save_local(big, "projects/1/big.bin")
    assert files.is_local_storage() is False and s3_settings.keys(BUCKET).count("projects/1/big.bin") == 1

    # the download view streams the object: it never holds the file in memory, and sends its length
    response, peak = _peak(lambda: files.serve_file("projects/1/big.bin", as_attachment=True))
    assert response.streaming and int(response["Content-Length"]) == size
    h = hashlib.sha256()
    _, peak_read = _peak(lambda: [h.update(chunk) for chunk in response.streaming_content])
    response.close()
    assert h.hexdigest() == digest
    assert max(peak, peak_read) < size // 4, (peak, peak_read)

    # a worker's local copy: on disk in its cache, same bytes, fetched once
    local = files.local_copy("projects/1/big.bin")
    assert local.is_relative_to(tmp_path / "cache") and hashlib.sha256(local.read_bytes()).hexdigest() == digest
    assert files.local_copy("projects/1/big.bin") == local
    with pytest.raises(FileNotFoundError):
        files.local_copy("projects/1/missing.bin")
    from django.http import Http404

    with pytest.raises(Http404):
        files.serve_file("projects/1/missing.bin")
    with files.open_stream("projects/1/upload.bin") as stream:
        assert len(stream.read(1000)) == 1000


def test_folders_sync_both_ways_and_prefixes_delete(s3_settings, tmp_path):
    from piggyback import files

    src = tmp_path / "run"
    (src / "model").mkdir(parents=True)
    for name, data in {"model/config.json": b"{}", "model/weights.bin": b"w" * 2000, "train.log": b"epoch 1\n"}.items():
        (src / name).write_bytes(data)
    sent: dict = {}
    assert files.save_tree(src, "projects/2/runs/7", unchanged=sent) == [
        "projects/2/runs/7/model/config.json", "projects/2/runs/7/model/weights.bin", "projects/2/runs/7/train.log"]
    (src / "train.log").write_bytes(b"epoch 1\nepoch 2\n")
    assert files.save_tree(src, "projects/2/runs/7", unchanged=sent) == ["projects/2/runs/7/train.log"]

    folder = files.local_dir("projects/2/runs/7")
    assert (folder / "model" / "weights.bin").read_bytes() == b"w" * 2000
    assert (folder / "train.log").read_bytes() == b"epoch 1\nepoch 2\n"
    # the bucket is the truth: a changed object is fetched again, a removed one disappears locally
    client = s3_settings.client()
    client.put_object(Bucket=BUCKET, Key="projects/2/runs/7/train.log", Body=b"epoch 1\nepoch 2\nepoch 3\n")
    client.delete_object(Bucket=BUCKET, Key="projects/2/runs/7/model/weights.bin")
    assert files.local_dir("projects/2/runs/7") == folder
    assert (folder / "train.log").read_bytes().endswith(b"epoch 3\n")
    assert not (folder / "model" / "weights.bin").exists() and (folder / "model" / "config.json").exists()

    files.delete_prefix("projects/2/runs/7")
    assert s3_settings.keys(BUCKET) == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_killed_worker_resumes_on_another_machine_from_the_checkpoint_in_the_bucket(s3_settings, owner, project,
                                                                                     redis_conn, tmp_path):
    """A worker SIGKILLed mid-run leaves its last epoch's checkpoint in the bucket (uploaded after every epoch),
    and a second worker with an empty cache of its own resumes from it, as it would from a local disk."""
    from piggyback.jobs import RunStatus, reconcile
    from tests.jobs.test_training_job import SLOW, make_easyvqa_dataset, wait_for
    from training_app import services
    from training_app.models import TrainingRun
    from training_app.registry_sync import sync_models

    sync_models()
    dataset = make_easyvqa_dataset(project, owner)  # images stored in the bucket by this process
    run = services.start_run(owner, dataset, "baseline-rnn", params=SLOW)
    base = {**os.environ, **s3_settings.env(BUCKET), "DATABASE_URL": workers.test_db_url(),
            "REDIS_URL": os.environ["REDIS_URL"], "JOB_HEARTBEAT_INTERVAL": "0.5", "PYTHONUNBUFFERED": "1"}

    def worker(name, burst=False):
        env = {**base, "MEDIA_ROOT": str(tmp_path / name / "media"), "WORKER_CACHE_DIR": str(tmp_path / name / "cache")}
        cmd = [sys.executable, "manage.py", "rqworker", "gpu"] + (["--burst"] if burst else [])
        return _start(cmd, env, tmp_path / f"{name}.log")

    first = worker("first")
    from gpu_worker.train import CKPT_DIR, STATE_FILE

    checkpoint = f"projects/{project.pk}/runs/{run.pk}/{CKPT_DIR}/{STATE_FILE}"
    try:
        def checkpoint_in_bucket():
            if first.poll() is not None:
                raise AssertionError((tmp_path / "first.log").read_text()[-3000:])
            row = TrainingRun.objects.get(pk=run.pk)
            return (row.status == RunStatus.RUNNING and len(row.metrics.get("epochs") or []) >= 1
                    and checkpoint in s3_settings.keys(BUCKET))

        wait_for(checkpoint_in_bucket, timeout=120, interval=0.2)
    finally:
        workers.kill_worker_and_horses(first)
    time.sleep(1.5)
    reconcile(heartbeat_timeout=1)
    row = TrainingRun.objects.get(pk=run.pk)
    assert row.status == RunStatus.FAILED, row.status
    services.resume_run(owner, row)

    second = worker("second", burst=True)
    try:
        second.wait(timeout=300)
    finally:
        _stop(second)
    row = TrainingRun.objects.get(pk=run.pk)
    assert row.status == RunStatus.SUCCEEDED, (row.error, (tmp_path / "second.log").read_text()[-3000:])
    assert "resuming from epoch" in row.log
    assert [h["epoch"] for h in row.metrics["history"]] == list(range(1, SLOW["epochs"] + 1))
    assert _files_under(tmp_path / "first" / "media") == _files_under(tmp_path / "second" / "media") == []
    keys = s3_settings.keys(BUCKET)
    assert f"projects/{project.pk}/runs/{run.pk}/model/config.json" in keys
