"""The docker-compose sequence, without Docker: a fresh database -> `manage.py migrate` -> gunicorn + `manage.py
rqworker` -> the API lists a default model and a tiny training run through the API succeeds.

Nothing else runs in between (no `up`, no `sync_models`): `migrate` alone must leave the model registry filled.
The database is a separate, freshly created one (this test database's name + ``_compose``).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.workers import kill_worker_and_horses

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _admin_connection():
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    return psycopg.connect(dbname="postgres", user=db.get("USER") or "postgres", password=db.get("PASSWORD") or None,
                           host=db.get("HOST") or "127.0.0.1", port=db.get("PORT") or 5432, autocommit=True)


@pytest.fixture
def fresh_database():
    from django.conf import settings

    db = settings.DATABASES["default"]
    name = f"{db['NAME']}_compose"
    with _admin_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    yield (f"postgres://{db.get('USER') or 'postgres'}{password}@{db.get('HOST') or '127.0.0.1'}:"
           f"{db.get('PORT') or 5432}/{name}")
    with _admin_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _wait(fn, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def _start(cmd, env, log_path):
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return proc


@pytest.mark.slow
def test_migrate_then_web_and_worker_offer_a_default_model_that_trains(fresh_database, redis_conn, tmp_path):
    import requests

    from gpu_worker.sample_data import build_sample_zip

    env = {**os.environ, "DATABASE_URL": fresh_database, "REDIS_URL": os.environ["REDIS_URL"],
           "MEDIA_ROOT": str(tmp_path / "media"), "WORKER_CACHE_DIR": str(tmp_path / "cache"),
           "PIGGYBACK_CPU_ONLY": "1", "PIGGYBACK_TORCH_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "DJANGO_SUPERUSER_PASSWORD": "pw-compose-123"}
    # 1. the compose `migrate` service
    r = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = subprocess.run([sys.executable, "manage.py", "createsuperuser", "--noinput", "--username", "ops",
                        "--email", "ops@example.com"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    # 2. web + worker services
    port = _free_port()
    web = _start([sys.executable, "-m", "gunicorn", "piggyback.wsgi:application", "--bind", f"127.0.0.1:{port}",
                  "--workers", "1", "--timeout", "120"], env, tmp_path / "web.log")
    worker = _start([sys.executable, "manage.py", "rqworker", "default", "gpu"], env, tmp_path / "worker.log")
    base = f"http://127.0.0.1:{port}"
    try:
        def healthy():
            try:
                return requests.get(f"{base}/healthz", timeout=30).status_code == 200
            except (requests.ConnectionError, requests.Timeout):
                assert web.poll() is None, (tmp_path / "web.log").read_text()[-3000:]
                return False

        _wait(healthy, 180, "gunicorn")
        token = requests.post(f"{base}/api/v1/auth/token/", data={"username": "ops", "password": "pw-compose-123"},
                              timeout=30).json()["token"]
        s = requests.Session()
        s.headers["Authorization"] = f"Token {token}"
        # 3. a default model is offered
        models = s.get(f"{base}/api/v1/models/", timeout=30).json()
        defaults = [m for m in models if m["default"]]
        assert [m["key"] for m in defaults] == ["baseline-rnn"], models
        assert defaults[0]["available"] and defaults[0]["enabled"]
        assert sum(m["default"] for m in models) == 1 and len(models) > 1
        # 4. a tiny run trains to success through the API
        project = s.post(f"{base}/api/v1/projects/", json={"name": "Compose check"}, timeout=30).json()
        sample = build_sample_zip(tmp_path / "images.zip", tmp_path / "questions.csv", max_images=24, seed=1)
        with open(sample["zip"], "rb") as zf, open(sample["csv"], "rb") as cf:
            r = s.post(f"{base}/api/v1/datasets/", data={"project": project["id"], "name": "tiny"},
                       files={"images": ("images.zip", zf), "questions": ("questions.csv", cf)}, timeout=120)
        assert r.status_code == 202, r.text
        dataset_url = r.json()["url"]

        def cleaned():
            body = s.get(dataset_url, timeout=30).json()
            assert body["status"] not in ("failed", "cancelled"), body
            return body["status"] == "succeeded"

        _wait(cleaned, 240, "the cleaning job")
        r = s.post(f"{base}/api/v1/training-runs/", timeout=60, json={
            "dataset": r.json()["id"], "model": defaults[0]["key"], "preset": "quick",
            "params": {"epochs": 1, "max_train_items": 60}})
        assert r.status_code == 202, r.text
        run_url = f"{base}/api/v1/training-runs/{r.json()['id']}/"

        def trained():
            body = s.get(run_url, timeout=30).json()
            assert body["status"] not in ("failed", "cancelled"), body
            return body if body["status"] == "succeeded" else None

        run = _wait(trained, 480, "the training job", interval=2)
        assert run["vqa_accuracy"] is not None and run["progress"] == 1
    finally:
        kill_worker_and_horses(worker)
        web.terminate()
        try:
            web.wait(timeout=20)
        except subprocess.TimeoutExpired:
            web.kill()
    # 5. migrating again keeps what an admin decided and does not duplicate the registry
    import psycopg

    with psycopg.connect(fresh_database, autocommit=True) as conn:
        count = conn.execute("SELECT count(*) FROM training_app_pretrainedmodel").fetchone()[0]
        conn.execute("UPDATE training_app_pretrainedmodel SET enabled = false WHERE key = 'baseline-bow'")
    r = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM training_app_pretrainedmodel").fetchone()[0] == count
        assert conn.execute("SELECT enabled FROM training_app_pretrainedmodel WHERE key = 'baseline-bow'"
                            ).fetchone()[0] is False
