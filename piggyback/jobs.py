"""The job pattern shared by every app (see docs/ARCHITECTURE.md, "The job pattern").

* A DB row (a subclass of :class:`BackgroundRun`) is the source of truth for every background task.
* :func:`enqueue` puts the job on an RQ queue *after* the transaction commits, with a deterministic id
  (``<prefix>-<pk>-<attempt>``), the queue's timeout and an ``on_failure`` callback that fails the row.
* :func:`background_job` wraps a job body: marks the row running, keeps a heartbeat, hands the body a
  throttled :class:`Reporter` (which also answers ``should_cancel()``), and records success, cancellation
  or a readable failure (the traceback is kept for staff only).
* :func:`reconcile` fails rows whose worker vanished (stale heartbeat, or the RQ job is gone).
"""
from __future__ import annotations

import functools
import logging
import threading
import time
import traceback as tb
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, connection, models, reset_queries, transaction
from django.utils import timezone

log = logging.getLogger(__name__)


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
FINAL_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


class BackgroundRun(models.Model):
    """Abstract base for every row that tracks a background job."""

    JOB_PREFIX = "job"  # subclasses: "clean", "train", "eval", ...
    QUEUE = "default"

    status = models.CharField(
        max_length=12, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True
    )
    progress = models.FloatField(default=0.0)
    stage = models.CharField(max_length=200, blank=True, default="")
    error = models.TextField(blank=True, default="", help_text="Message shown to the user.")
    traceback = models.TextField(blank=True, default="", help_text="Shown to staff only.")
    cancel_requested = models.BooleanField(default=False)
    rq_job_id = models.CharField(max_length=120, blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    worker_name = models.CharField(max_length=200, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    # -- state helpers (all writes are single UPDATEs, so a worker and a web request never clobber
    #    each other's fields) --
    def _update(self, **fields):
        type(self).objects.filter(pk=self.pk).update(**fields)
        for key, value in fields.items():
            setattr(self, key, value)

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def duration(self) -> timedelta | None:
        if not self.started_at:
            return None
        return (self.finished_at or timezone.now()) - self.started_at

    def mark_failed(self, message: str, traceback_text: str = "") -> None:
        self._update(
            status=RunStatus.FAILED,
            error=message[:5000],
            traceback=traceback_text,
            finished_at=timezone.now(),
        )


# ------------------------------------------------------------------------------------------------
# Enqueueing
# ------------------------------------------------------------------------------------------------
def fresh_connection() -> None:
    """close_old_connections(), except inside an atomic block (tests run jobs inside one)."""
    if not connection.in_atomic_block:
        close_old_connections()


def db_retry(fn, *args, **kwargs):
    """Run a small DB write; if the connection was dropped (server restart, idle kill), reconnect once."""
    from django.db import InterfaceError, OperationalError

    try:
        return fn(*args, **kwargs)
    except (OperationalError, InterfaceError):
        if connection.in_atomic_block:
            raise
        log.warning("database connection lost; reconnecting once", exc_info=True)
        connection.close()
        return fn(*args, **kwargs)


def _resolve_model(label: str):
    from django.apps import apps

    return apps.get_model(label)


def on_job_failure(job, connection_, exc_type, exc_value, traceback_obj):
    """RQ on_failure callback: make sure the row does not stay queued/running."""
    model_label, pk = job.meta.get("row_model"), job.meta.get("row_pk")
    if not model_label:
        return
    fresh_connection()
    model = _resolve_model(model_label)
    row = model.objects.filter(pk=pk).first()
    if row is None or row.is_final:
        return
    name = getattr(exc_type, "__name__", "Error")
    if name == "JobTimeoutException":
        message = "The job took longer than its time limit and was stopped. Try a smaller dataset or fewer epochs."
    else:
        message = f"The job stopped unexpectedly ({name}: {exc_value}). You can try again."
    text = "".join(tb.format_exception(exc_type, exc_value, traceback_obj)) if traceback_obj else ""
    row.mark_failed(message, text)


def get_queue(name: str):
    import django_rq

    return django_rq.get_queue(name)


def project_rate_limit(row: BackgroundRun):
    """RQ's concurrency limit for GPU rows: at most GPU_JOBS_PER_PROJECT of one project's jobs queued
    or running at once; the rest wait in RQ's rate-limited set (oldest first) and are promoted as
    slots free up, so one team cannot hold every GPU worker. None when the limit is off (0)."""
    from rq import RateLimit

    limit = settings.GPU_JOBS_PER_PROJECT
    project_id = getattr(row, "project_id", None)
    if row.QUEUE != "gpu" or limit <= 0 or project_id is None:
        return None
    return RateLimit(key=f"piggyback-project-{project_id}-gpu", concurrency=limit)


def queue_position(row: BackgroundRun) -> int | None:
    """How many jobs start before this queued row (0 = next); None when it is not waiting in RQ.

    A row held back by its project's limit waits behind the whole queue plus its project's earlier
    held rows."""
    if row.status != RunStatus.QUEUED or not row.rq_job_id:
        return None
    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus
    from rq.rate_limit import RateLimitRegistry

    try:
        job = Job.fetch(row.rq_job_id, connection=get_queue(row.QUEUE).connection)
        status = job.get_status()
    except NoSuchJobError:
        return None
    if status == JobStatus.RATE_LIMITED:
        held = RateLimitRegistry.from_job(job).get_rate_limited_job_ids()
        ahead = held.index(job.id) if job.id in held else len(held)
        return len(get_queue(job.origin)) + ahead
    if status == JobStatus.QUEUED:
        position = job.get_position()
        return position if position is not None else None
    return None


def queue_text(position: int | None) -> str:
    """The sentence a queued run's page shows."""
    if position is None:
        return ""
    if position == 0:
        return "Yours is the next run to start."
    return f"{position} run{'s' if position != 1 else ''} ahead of yours."


def enqueue(row: BackgroundRun, func, *, queue: str | None = None, timeout: int | None = None, **kwargs):
    """Queue ``func(row.pk, **kwargs)`` once the current transaction commits.

    The RQ job id is deterministic: ``<JOB_PREFIX>-<pk>-<attempt>``. GPU rows go through the
    project's concurrency limit (:func:`project_rate_limit`).
    """
    from rq import Callback

    queue_name = queue or row.QUEUE
    attempt = row.attempts + 1
    job_id = f"{row.JOB_PREFIX}-{row.pk}-{attempt}"
    row._update(
        status=RunStatus.QUEUED,
        rq_job_id=job_id,
        attempts=attempt,
        progress=0.0 if row.status != RunStatus.QUEUED else row.progress,
        stage="Waiting for a free worker",
        error="",
        traceback="",
        cancel_requested=False,
        finished_at=None,
        heartbeat_at=None,
    )
    label = row._meta.label
    rate_limit = project_rate_limit(row)

    def _send():
        q = get_queue(queue_name)
        q.enqueue(
            func,
            args=(row.pk,),
            job_id=job_id,
            job_timeout=timeout or settings.JOB_TIMEOUTS.get(queue_name, 3600),
            result_ttl=24 * 3600,
            failure_ttl=7 * 24 * 3600,
            meta={"row_model": label, "row_pk": row.pk},
            on_failure=Callback(on_job_failure),
            kwargs=kwargs or {},
            rate_limit=rate_limit,
        )

    transaction.on_commit(_send)
    return job_id


def cancel(row: BackgroundRun) -> bool:
    """Cancel a queued row at once, or ask a running one to stop at its next step."""
    row.refresh_from_db()
    if row.status == RunStatus.QUEUED:
        updated = type(row).objects.filter(pk=row.pk, status=RunStatus.QUEUED).update(
            status=RunStatus.CANCELLED,
            cancel_requested=True,
            stage="Cancelled before it started",
            finished_at=timezone.now(),
        )
        if updated:
            _cancel_rq_job(row)
            row.refresh_from_db()
            return True
        row.refresh_from_db()
    if row.status == RunStatus.RUNNING:
        row._update(cancel_requested=True, stage="Stopping at the next step…")
        return True
    return False


def _cancel_rq_job(row: BackgroundRun) -> None:
    if not row.rq_job_id:
        return
    try:
        from rq.job import Job

        job = Job.fetch(row.rq_job_id, connection=get_queue(row.QUEUE).connection)
        job.cancel()
    except Exception:  # the job may already be gone; the row is what counts
        log.info("RQ job %s not cancelled (already gone)", row.rq_job_id)


# ------------------------------------------------------------------------------------------------
# Inside the worker
# ------------------------------------------------------------------------------------------------
class Reporter:
    """Throttled progress writer handed to gpu_worker code as its ``report`` callback.

    At most one DB write every ``min_interval`` seconds (the first and the final ones always go through);
    ``should_cancel()`` reads the row's flag at most once a second.
    """

    def __init__(self, row: BackgroundRun, min_interval: float = 2.0, on_metrics=None):
        self.row = row
        self.model = type(row)
        self.min_interval = min_interval
        self.on_metrics = on_metrics
        self._last_write = 0.0
        self._last_cancel_check = 0.0
        self._cancel = False
        self.writes = 0

    def __call__(self, progress: float, stage: str = "", metrics: dict | None = None, force: bool = False):
        now = time.monotonic()
        if metrics and self.on_metrics:
            self.on_metrics(metrics)
        if not force and now - self._last_write < self.min_interval and self.writes:
            return
        self._last_write = now
        self.writes += 1
        # with DEBUG on (the quick start), Django keeps the SQL of the last 9,000 queries of the process; a
        # job's bulk inserts would keep hundreds of MB of it in the work horse
        reset_queries()
        fields = {"progress": max(0.0, min(1.0, float(progress))), "heartbeat_at": timezone.now()}
        if stage:
            fields["stage"] = stage[:200]
        db_retry(self.model.objects.filter(pk=self.row.pk).update, **fields)

    def should_cancel(self) -> bool:
        now = time.monotonic()
        if self._cancel:
            return True
        if now - self._last_cancel_check >= 1.0:
            self._last_cancel_check = now
            self._cancel = bool(
                db_retry(lambda: self.model.objects.filter(pk=self.row.pk).values_list("cancel_requested", flat=True).first())
            )
        return self._cancel


class _Heartbeat(threading.Thread):
    """Touches ``heartbeat_at`` while the job body runs; dies with the worker process."""

    def __init__(self, model, pk, interval):
        super().__init__(daemon=True, name=f"heartbeat-{model.__name__}-{pk}")
        self.model, self.pk, self.interval = model, pk, interval
        self.stop_event = threading.Event()

    def run(self):
        try:
            while not self.stop_event.wait(self.interval):
                try:
                    self.model.objects.filter(pk=self.pk, status=RunStatus.RUNNING).update(
                        heartbeat_at=timezone.now()
                    )
                except Exception:  # a dropped DB connection must not kill the job: reconnect next beat
                    log.warning("heartbeat write failed; reconnecting", exc_info=True)
                    connection.close()
        finally:
            connection.close()


def _current_worker_name() -> str:
    try:
        from rq import get_current_job

        job = get_current_job()
        if job is not None and job.worker_name:
            return job.worker_name
    except Exception:
        pass
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def background_job(model_label: str):
    """Decorator for RQ entry points ``func(pk, **kwargs)`` whose body is ``body(row, reporter, **kwargs)``."""

    def decorator(body):
        @functools.wraps(body)
        def wrapper(pk, **kwargs):
            from gpu_worker import Cancelled, UserFacingError
            from gpu_worker.memory import tune_malloc

            fresh_connection()
            tune_malloc()   # before the job's threads (heartbeat, image decoders) get malloc arenas of their own
            model = _resolve_model(model_label)
            # Claim the row: only a queued row may start (a cancelled-while-queued row is skipped).
            claimed = model.objects.filter(pk=pk, status=RunStatus.QUEUED, cancel_requested=False).update(
                status=RunStatus.RUNNING,
                started_at=timezone.now(),
                heartbeat_at=timezone.now(),
                worker_name=_current_worker_name()[:200],
                stage="Starting",
            )
            if not claimed:
                log.info("%s %s is not queued any more; skipping", model_label, pk)
                return "skipped"
            row = model.objects.get(pk=pk)
            reporter = Reporter(row)
            heartbeat = _Heartbeat(model, pk, settings.JOB_HEARTBEAT_INTERVAL)
            heartbeat.start()
            try:
                result = body(row, reporter, **kwargs)
            except Cancelled:
                db_retry(row._update, status=RunStatus.CANCELLED, stage="Cancelled", finished_at=timezone.now())
                return "cancelled"
            except UserFacingError as exc:
                db_retry(row.mark_failed, str(exc), tb.format_exc())
                return "failed"
            except Exception as exc:
                db_retry(
                    row.mark_failed,
                    f"Something went wrong while {row.stage.lower() or 'working'}: "
                    f"{type(exc).__name__}: {exc}. Nothing you stored was lost; you can try again.",
                    tb.format_exc(),
                )
                raise
            finally:
                heartbeat.stop_event.set()
                heartbeat.join(timeout=5)
            db_retry(
                model.objects.filter(pk=pk, status=RunStatus.RUNNING).update,
                status=RunStatus.SUCCEEDED,
                progress=1.0,
                stage="Done",
                finished_at=timezone.now(),
                heartbeat_at=timezone.now(),
            )
            return result

        wrapper.model_label = model_label
        return wrapper

    return decorator


# ------------------------------------------------------------------------------------------------
# Reconcile: no row stays "running" (or "queued") forever
# ------------------------------------------------------------------------------------------------
def _background_models():
    from django.apps import apps

    return [m for m in apps.get_models() if issubclass(m, BackgroundRun)]


def reconcile(now=None, heartbeat_timeout: int | None = None) -> list[str]:
    """Fail rows whose worker vanished. Returns a line per row changed."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus

    now = now or timezone.now()
    timeout = heartbeat_timeout if heartbeat_timeout is not None else settings.JOB_HEARTBEAT_TIMEOUT
    stale_before = now - timedelta(seconds=timeout)
    changed = []
    for model in _background_models():
        for row in model.objects.filter(status=RunStatus.RUNNING, heartbeat_at__lt=stale_before):
            row.mark_failed(
                "The worker running this job stopped responding (it may have been restarted or run out "
                "of memory). Nothing stored was lost; you can resume or retry it.",
                f"reconcile: heartbeat {row.heartbeat_at.isoformat()} older than {timeout}s",
            )
            changed.append(f"{model._meta.label} {row.pk}: running with stale heartbeat -> failed")
        # Queued rows whose RQ job vanished (e.g. Redis restarted without persistence).
        for row in model.objects.filter(status=RunStatus.QUEUED, created_at__lt=stale_before):
            conn = get_queue(row.QUEUE).connection
            try:
                status = Job.fetch(row.rq_job_id, connection=conn).get_status() if row.rq_job_id else None
            except NoSuchJobError:
                status = None
            if status in (None, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                row.mark_failed(
                    "This job was lost by the job queue (it was restarted). Nothing stored was lost; "
                    "press Retry to queue it again.",
                    f"reconcile: RQ job {row.rq_job_id!r} status {status}",
                )
                changed.append(f"{model._meta.label} {row.pk}: queued without RQ job -> failed")
    return changed
