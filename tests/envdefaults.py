"""Loaded by pytest before Django's settings: the suite runs on the real PostgreSQL and Redis.

Defaults match the machine and CI (127.0.0.1, trust auth); override with DATABASE_URL / REDIS_URL.
"""
import os
import tempfile

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/piggyback")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/9")
os.environ.setdefault("MEDIA_ROOT", tempfile.mkdtemp(prefix="piggyback-test-media-"))
os.environ.setdefault("WORKER_CACHE_DIR", tempfile.mkdtemp(prefix="piggyback-test-cache-"))
os.environ.setdefault("JOB_HEARTBEAT_INTERVAL", "0.5")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
