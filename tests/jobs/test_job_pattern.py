"""The shared job pattern on real Redis + a real RQ SimpleWorker (no is_async=False)."""
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone
from rq.job import Job

from datasets_app.models import Dataset
from piggyback import jobs
from tests.jobs import job_bodies

pytestmark = pytest.mark.django_db


def make_row(project):
    return Dataset.objects.create(
        project=project, name="d", images_file=ContentFile(b"x", name="a.zip"), questions_file=ContentFile(b"y", name="q.csv")
    )


def test_success_updates_row(project, run_jobs, django_capture_on_commit_callbacks):
    row = make_row(project)
    with django_capture_on_commit_callbacks(execute=True):
        job_id = jobs.enqueue(row, job_bodies.succeed, steps=3)
    assert job_id == f"clean-{row.pk}-1"
    row.refresh_from_db()
    assert row.status == "queued" and row.rq_job_id == job_id
    run_jobs()
    row.refresh_from_db()
    assert row.status == "succeeded"
    assert row.progress == 1.0 and row.counts == {"steps": 3}
    assert row.started_at and row.finished_at and row.heartbeat_at
    assert row.error == "" and row.traceback == ""


def test_every_job_tunes_malloc_before_its_body_runs(project, run_jobs, django_capture_on_commit_callbacks,
                                                            monkeypatch):
    """The shared wrapper sets glibc's malloc arenas and mmap threshold (gpu_worker.memory) before the body and
    its threads run."""
    from gpu_worker import memory

    order = []
    monkeypatch.setattr(memory, "tune_malloc", lambda *a: order.append("capped") or {})
    real_update = Dataset._update

    def spy_update(self, **fields):
        if "counts" in fields:
            order.append("body")
        return real_update(self, **fields)

    monkeypatch.setattr(Dataset, "_update", spy_update)
    row = make_row(project)
    with django_capture_on_commit_callbacks(execute=True):
        jobs.enqueue(row, job_bodies.succeed, steps=2)
    run_jobs()
    row.refresh_from_db()
    assert row.status == "succeeded" and order == ["capped", "body"], order


def test_nothing_enqueued_when_transaction_rolls_back(project, redis_conn):
    row = make_row(project)
    from django.db import transaction

    with pytest.raises(RuntimeError):
        with transaction.atomic():
            jobs.enqueue(row, job_bodies.succeed)
            raise RuntimeError("rolled back")
    assert jobs.get_queue("default").count == 0


def test_failure_is_readable_and_traceback_kept(project, run_jobs, django_capture_on_commit_callbacks):
    row = make_row(project)
    with django_capture_on_commit_callbacks(execute=True):
        jobs.enqueue(row, job_bodies.explode)
    run_jobs()
    row.refresh_from_db()
    assert row.status == "failed"
    assert "ZeroDivisionError" in row.error and "try again" in row.error
    assert "Traceback" in row.traceback
    job = Job.fetch(row.rq_job_id, connection=jobs.get_queue("default").connection)
    assert job.is_failed


def test_user_facing_error_message_is_kept_verbatim(project, run_jobs, django_capture_on_commit_callbacks):
    row = make_row(project)
    with django_capture_on_commit_callbacks(execute=True):
        jobs.enqueue(row, job_bodies.user_error)
    run_jobs()
    row.refresh_from_db()
    assert row.status == "failed"
    assert row.error.startswith("Row 7, column “question”")


def test_cancel_while_queued_never_runs(project, run_jobs, django_capture_on_commit_callbacks):
    row = make_row(project)
    with django_capture_on_commit_callbacks(execute=True):
        jobs.enqueue(row, job_bodies.succeed)
    assert jobs.cancel(row)
    row.refresh_from_db()
    assert row.status == "cancelled"
    run_jobs()
    row.refresh_from_db()
    assert row.status == "cancelled" and row.started_at is None and row.counts == {}


@pytest.mark.django_db(transaction=True)
def test_cancel_requested_while_running(project, run_jobs):
    """A second connection asks a running job to stop; the worker stops at its next step."""
    import threading
    import time

    from django.db import connection

    row = make_row(project)
    jobs.enqueue(row, job_bodies.cancellable)  # autocommit: enqueued at once

    def canceller():
        try:
            for _ in range(200):
                if Dataset.objects.filter(pk=row.pk, status="running").exists():
                    jobs.cancel(Dataset.objects.get(pk=row.pk))
                    return
                time.sleep(0.01)
        finally:
            connection.close()

    t = threading.Thread(target=canceller)
    t.start()
    run_jobs()
    t.join()
    row.refresh_from_db()
    assert row.status == "cancelled"
    assert row.started_at is not None and row.finished_at is not None


def test_reporter_throttles_writes(project):
    row = make_row(project)
    rep = jobs.Reporter(row, min_interval=60)
    for i in range(100):
        rep(i / 100, f"step {i}")
    assert rep.writes == 1
    rep(1.0, "final", force=True)
    assert rep.writes == 2
    row.refresh_from_db()
    assert row.stage == "final"


def test_reporter_forgets_the_sql_debug_mode_keeps(project, settings):
    """With DEBUG on (the quick start) Django keeps the SQL of the last 9,000 queries; a long job's bulk inserts
    would keep hundreds of MB of it. Each progress write lets go of it."""
    from django.db import connection

    settings.DEBUG = True
    row = make_row(project)
    rep = jobs.Reporter(row, min_interval=0)
    type(row).objects.filter(pk__in=range(1, 30_000)).count()   # a long statement, like a bulk insert's
    assert any(len(q["sql"]) > 100_000 for q in connection.queries)
    rep(0.5, "half-way")
    assert all(len(q["sql"]) < 1_000 for q in connection.queries), [len(q["sql"]) for q in connection.queries]


def test_reconcile_fails_vanished_worker(project):
    row = make_row(project)
    Dataset.objects.filter(pk=row.pk).update(
        status="running", started_at=timezone.now(), heartbeat_at=timezone.now() - timedelta(minutes=10)
    )
    fresh = make_row(project)
    Dataset.objects.filter(pk=fresh.pk).update(status="running", heartbeat_at=timezone.now())
    changed = jobs.reconcile(heartbeat_timeout=90)
    row.refresh_from_db()
    fresh.refresh_from_db()
    assert row.status == "failed" and "stopped responding" in row.error
    assert fresh.status == "running"
    assert len([c for c in changed if f" {row.pk}:" in c]) == 1


def test_reconcile_fails_queued_row_whose_job_is_lost(project, redis_conn):
    row = make_row(project)
    Dataset.objects.filter(pk=row.pk).update(
        status="queued", rq_job_id=f"clean-{row.pk}-1", created_at=timezone.now() - timedelta(hours=1)
    )
    jobs.reconcile(heartbeat_timeout=90)
    row.refresh_from_db()
    assert row.status == "failed" and "Retry" in row.error


def test_reconcile_command_runs(project, redis_conn):
    from io import StringIO

    from django.core.management import call_command

    row = make_row(project)
    Dataset.objects.filter(pk=row.pk).update(status="running", heartbeat_at=timezone.now() - timedelta(hours=1))
    out = StringIO()
    call_command("reconcile_runs", stdout=out)
    assert f"datasets_app.Dataset {row.pk}" in out.getvalue()
