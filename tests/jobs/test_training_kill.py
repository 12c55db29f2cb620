"""A real `rqworker` process is SIGKILLed mid-training: reconcile fails the row readably, resume finishes it."""
from __future__ import annotations

import time

import pytest

from piggyback.jobs import RunStatus, reconcile
from tests.jobs.test_training_job import SLOW, dataset, models_synced, wait_for  # noqa: F401
from tests.workers import kill_worker_and_horses, start_worker


@pytest.mark.django_db(transaction=True)
def test_sigkilled_worker_is_reconciled_then_resumed(owner, dataset, redis_conn, run_jobs, tmp_path):
    from training_app import services
    from training_app.models import TrainingRun

    run = services.start_run(owner, dataset, "baseline-rnn", params=SLOW)
    proc = start_worker(("gpu",), tmp_path / "worker.log", burst=True)
    try:
        def running_with_progress():
            row = TrainingRun.objects.get(pk=run.pk)
            if proc.poll() is not None:
                raise AssertionError(f"worker exited early: {(tmp_path / 'worker.log').read_text()[-3000:]}")
            return row.status == RunStatus.RUNNING and row.progress > 0 and len(row.metrics.get("epochs") or []) >= 1

        wait_for(running_with_progress, timeout=90, interval=0.2)
    finally:
        kill_worker_and_horses(proc)  # the worker and its work horse, which has its own process group
    row = TrainingRun.objects.get(pk=run.pk)
    assert row.status == RunStatus.RUNNING  # nobody told the database
    epochs_before = len(row.metrics["epochs"])

    time.sleep(1.5)
    changed = reconcile(heartbeat_timeout=1)
    row = TrainingRun.objects.get(pk=run.pk)
    assert any(f"{run.pk}:" in line for line in changed), (changed, row.status, row.heartbeat_at)
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
