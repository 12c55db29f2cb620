"""Fair GPU queues on real `rqworker` processes: one project runs at most GPU_JOBS_PER_PROJECT jobs at once,
its further runs wait without blocking other projects, and a queued run knows its place."""
from __future__ import annotations

import pytest

from piggyback import jobs
from piggyback.jobs import RunStatus
from tests.jobs import job_bodies
from tests.jobs.test_training_job import models_synced, wait_for  # noqa: F401
from tests.workers import kill_worker_and_horses, start_worker


def _run_row(project, owner):
    from datasets_app.models import Dataset
    from training_app.models import PretrainedModel, TrainingRun

    ds = Dataset.objects.create(project=project, name="d", created_by=owner, images_file="x/images.zip",
                                questions_file="x/questions.csv", status=RunStatus.SUCCEEDED)
    return TrainingRun.objects.create(project=project, dataset=ds, model=PretrainedModel.objects.get(key="baseline-rnn"),
                                      created_by=owner)


@pytest.mark.django_db(transaction=True)
def test_project_limit_queue_position_and_other_projects_go_first(
        owner, project, redis_conn, models_synced, settings, tmp_path, client):  # noqa: F811
    from piggyback.project_services import create_project
    from training_app.models import TrainingRun

    settings.GPU_JOBS_PER_PROJECT = 1
    other = create_project(owner, "Dermatology")
    a1, a2, a3 = (_run_row(project, owner) for _ in range(3))
    b1 = _run_row(other, owner)
    for row in (a1, a2, a3, b1):
        jobs.enqueue(row, job_bodies.gpu_sleep, seconds=2.0)  # autocommit: sent at once
    for row in (a1, a2, a3, b1):
        row.refresh_from_db()

    # A1 and B1 are in the gpu queue; A2 and A3 wait for project A's slot, behind the whole queue
    assert [jobs.queue_position(r) for r in (a1, b1, a2, a3)] == [0, 1, 2, 3]
    client.force_login(owner)
    api = client.get(f"/api/v1/training-runs/{a2.pk}/").json()
    assert api["status"] == "queued" and api["queue_position"] == 2
    assert "2 runs ahead of yours" in client.get(f"/training/runs/{a2.pk}/").content.decode()
    assert "Yours is the next run to start." in client.get(f"/training/runs/{a1.pk}/").content.decode()

    workers = [start_worker(("gpu",), tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        def all_done():
            for w in workers:
                if w.poll() is not None:
                    raise AssertionError((tmp_path / "worker0.log").read_text()[-3000:])
            return all(r.status == RunStatus.SUCCEEDED for r in TrainingRun.objects.filter(
                pk__in=[a1.pk, a2.pk, a3.pk, b1.pk]))

        wait_for(all_done, timeout=120, interval=0.3)
    finally:
        for w in workers:
            kill_worker_and_horses(w)
    a1, a2, a3, b1 = (TrainingRun.objects.get(pk=r.pk) for r in (a1, a2, a3, b1))
    # project A never ran two jobs at once, although two workers were free
    assert a1.finished_at <= a2.started_at and a2.finished_at <= a3.started_at
    # project B did not wait behind A's extra runs
    assert b1.started_at < a2.started_at
    assert jobs.queue_position(a3) is None and client.get(f"/api/v1/training-runs/{a3.pk}/").json()["queue_position"] is None


@pytest.mark.django_db
def test_no_limit_by_default_and_not_for_cleaning(project, owner, redis_conn, models_synced, settings):  # noqa: F811
    from datasets_app.models import Dataset

    assert jobs.project_rate_limit(_run_row(project, owner)) is None  # GPU_JOBS_PER_PROJECT=0: off
    settings.GPU_JOBS_PER_PROJECT = 2
    limit = jobs.project_rate_limit(_run_row(project, owner))
    assert limit.concurrency == 2 and str(project.pk) in limit.key
    assert jobs.project_rate_limit(Dataset.objects.filter(project=project).first()) is None  # CPU queue
    assert jobs.queue_text(None) == "" and jobs.queue_text(1) == "1 run ahead of yours."
