"""A real `rqworker` process is SIGKILLed mid-training: reconcile fails the row readably, resume finishes it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings

from piggyback.jobs import RunStatus, reconcile
from tests.jobs.test_training_job import SLOW, dataset, models_synced, wait_for  # noqa: F401


def _worker_env() -> dict:
    db = settings.DATABASES["default"]  # the test database this process uses
    url = f"postgres://{db['USER'] or 'postgres'}"
    if db.get("PASSWORD"):
        url += f":{db['PASSWORD']}"
    url += f"@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return {**os.environ, "DATABASE_URL": url, "REDIS_URL": settings.REDIS_URL,
            "MEDIA_ROOT": str(settings.MEDIA_ROOT), "WORKER_CACHE_DIR": str(settings.WORKER_CACHE_DIR),
            "JOB_HEARTBEAT_INTERVAL": "0.5", "PYTHONUNBUFFERED": "1"}


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


@pytest.mark.django_db(transaction=True)
def test_sigkilled_worker_is_reconciled_then_resumed(owner, dataset, redis_conn, run_jobs, tmp_path):
    from training_app import services
    from training_app.models import TrainingRun

    run = services.start_run(owner, dataset, "baseline-rnn", params=SLOW)
    log = open(tmp_path / "worker.log", "wb")
    proc = subprocess.Popen([sys.executable, str(settings.BASE_DIR / "manage.py"), "rqworker", "gpu", "--burst"],
                            env=_worker_env(), cwd=str(settings.BASE_DIR), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        def running_with_progress():
            row = TrainingRun.objects.get(pk=run.pk)
            if proc.poll() is not None:
                raise AssertionError(f"worker exited early: {(tmp_path / 'worker.log').read_text()[-3000:]}")
            return row.status == RunStatus.RUNNING and row.progress > 0 and len(row.metrics.get("epochs") or []) >= 1

        wait_for(running_with_progress, timeout=90, interval=0.2)
    finally:
        # rq's work horse runs in its own process group (os.setpgrp): kill both groups, at once.
        for pid in _children(proc.pid):
            os.killpg(pid, signal.SIGKILL)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        log.close()
    row = TrainingRun.objects.get(pk=run.pk)
    assert row.status == RunStatus.RUNNING  # nobody told the database
    epochs_before = len(row.metrics["epochs"])

    time.sleep(1.5)
    changed = reconcile(heartbeat_timeout=1)
    row = TrainingRun.objects.get(pk=run.pk)
    assert any(f"{run.pk}:" in line for line in changed), (changed, row.status, row.heartbeat_at, __import__("django.utils.timezone").utils.timezone.now())
    row = TrainingRun.objects.get(pk=run.pk)
    assert row.status == RunStatus.FAILED
    assert "stopped responding" in row.error and "resume" in row.error

    row = services.resume_run(owner, row)
    assert row.status == RunStatus.QUEUED and row.attempts == 2
    run_jobs(("gpu",))
    row = TrainingRun.objects.get(pk=run.pk)
    assert row.status == RunStatus.SUCCEEDED, row.error
    assert "resuming from epoch" in row.log
    history = row.metrics["history"]
    assert [h["epoch"] for h in history] == list(range(1, SLOW["epochs"] + 1))
    assert epochs_before >= 1 and row.vqa_accuracy is not None
