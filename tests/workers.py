"""Real `manage.py rqworker` processes for tests: on the test database and a chosen Redis, and a way to
SIGKILL one together with its work horse (rq forks each job into a child with its own process group)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_db_url() -> str:
    """The URL of the test database this process uses (pytest-django renamed it to test_<name>)."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return (f"postgres://{db.get('USER') or 'postgres'}{password}@{db.get('HOST') or '127.0.0.1'}:"
            f"{db.get('PORT') or 5432}/{db['NAME']}")


def worker_env(redis_url: str | None = None) -> dict:
    from django.conf import settings

    return {**os.environ, "DATABASE_URL": test_db_url(), "REDIS_URL": redis_url or settings.REDIS_URL,
            "MEDIA_ROOT": str(settings.MEDIA_ROOT), "WORKER_CACHE_DIR": str(settings.WORKER_CACHE_DIR),
            "JOB_HEARTBEAT_INTERVAL": "0.5", "PYTHONUNBUFFERED": "1"}


def start_worker(queues, log_path, *, redis_url: str | None = None, burst: bool = False) -> subprocess.Popen:
    """`manage.py rqworker <queues>` in its own session, output to ``log_path``."""
    log = open(log_path, "w")
    cmd = [sys.executable, "manage.py", "rqworker", *queues] + (["--burst"] if burst else [])
    proc = subprocess.Popen(cmd, cwd=ROOT, env=worker_env(redis_url), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()  # the child keeps its own handle
    return proc


def kill_worker_and_horses(proc: subprocess.Popen) -> None:
    """SIGKILL the worker's process group and every descendant's (the work horse has its own group)."""
    import psutil

    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    for pid in [proc.pid] + [d.pid for d in descendants]:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    proc.wait(timeout=10)


def stop_worker(proc: subprocess.Popen, timeout: float = 20) -> None:
    """A warm shutdown (SIGTERM), then SIGKILL if it does not stop in time."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_worker_and_horses(proc)
