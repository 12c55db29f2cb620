"""Job bodies used by the job-pattern tests (importable by the RQ worker by dotted path)."""
import time

from gpu_worker import Cancelled, UserFacingError
from piggyback.jobs import background_job


@background_job("datasets_app.Dataset")
def succeed(row, reporter, steps=5):
    for i in range(steps):
        reporter((i + 1) / steps, f"Step {i + 1}/{steps}", force=True)
    row._update(counts={"steps": steps})
    return "ok"


@background_job("datasets_app.Dataset")
def explode(row, reporter):
    reporter(0.3, "Reading the questions file", force=True)
    raise ZeroDivisionError("division by zero in step 3")


@background_job("datasets_app.Dataset")
def user_error(row, reporter):
    raise UserFacingError("Row 7, column “question”: the question is empty. Fill it in and upload again.")


@background_job("datasets_app.Dataset")
def cancellable(row, reporter):
    for _ in range(250):  # ~5 s: should_cancel() reads the flag once a second
        if reporter.should_cancel():
            raise Cancelled()
        time.sleep(0.02)
    return "finished"


@background_job("datasets_app.Dataset")
def survives_db_drop(row, reporter):
    """Its own DB connection is killed by the server half-way; progress writes reconnect and go on."""
    import psycopg
    from django.conf import settings
    from django.db import connection

    reporter(0.2, "Before the connection drop", force=True)
    pid = connection.connection.info.backend_pid
    db = settings.DATABASES["default"]
    with psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"] or "postgres",
                         dbname=db["NAME"], autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    reporter(0.8, "After the connection drop", force=True)
    return "ok"


@background_job("datasets_app.Dataset")
def slow(row, reporter, seconds=6.0):
    """A long step without cancel checks (a worker killed or Redis restarted meanwhile)."""
    end = time.time() + seconds
    while time.time() < end:
        reporter(1 - (end - time.time()) / seconds, "Working")
        time.sleep(0.05)
    return "done"


@background_job("training_app.TrainingRun")
def gpu_sleep(row, reporter, seconds=2.0):
    """A GPU-queue job that only takes time (the fair-queue tests watch when runs start and end)."""
    reporter(0.1, "Working", force=True)
    time.sleep(seconds)
    return "slept"
