"""Shared fixtures: users with roles, API clients, and a real RQ SimpleWorker in burst mode."""
from __future__ import annotations

import pytest
from django.conf import settings


def pytest_configure(config):
    engine = settings.DATABASES["default"]["ENGINE"]
    if "postgresql" not in engine:
        pytest.exit(f"The test suite runs on PostgreSQL, not {engine}; set DATABASE_URL.", returncode=2)


@pytest.fixture
def redis_conn():
    import django_rq

    conn = django_rq.get_connection("default")
    conn.flushdb()
    yield conn
    conn.flushdb()


@pytest.fixture
def run_jobs(redis_conn):
    """Run every queued job with a real RQ SimpleWorker (burst), exercising pickling and callbacks."""
    import django_rq
    from rq import SimpleWorker

    def _run(queues=("default", "gpu")):
        worker = SimpleWorker([django_rq.get_queue(q) for q in queues], connection=redis_conn)
        worker.work(burst=True, with_scheduler=False)
        return worker

    return _run


@pytest.fixture
def make_user(db, django_user_model):
    def _make(username, **extra):
        return django_user_model.objects.create_user(username=username, email=f"{username}@example.com", password="pw-" + username + "-123", **extra)

    return _make


@pytest.fixture
def owner(make_user):
    return make_user("olivia")


@pytest.fixture
def other_user(make_user):
    return make_user("mallory")


@pytest.fixture
def project(owner):
    from piggyback.project_services import create_project

    return create_project(owner, "Radiology", "chest x-rays")


@pytest.fixture
def members(project, make_user):
    """viewer / editor / second owner of ``project``."""
    from piggyback.project_services import add_member

    out = {}
    for role in ("viewer", "editor", "owner"):
        user = make_user(f"{role}_user")
        add_member(project, user.username, role)
        out[role] = user
    return out


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def client_for():
    """An APIClient logged in (force_authenticate) as the given user, or anonymous for None."""
    from rest_framework.test import APIClient

    def _make(user):
        c = APIClient()
        if user is not None:
            c.force_authenticate(user)
        return c

    return _make


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    """PBKDF2 at production strength costs ~0.3 s per user; tests only need a hasher that works."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """Each test starts with empty rate-limit counters (API throttles, failed sign-ins): they live in the shared
    Redis cache, which outlives a test and even the run. Only the cache's own keys are removed, not RQ's."""
    from django.core.cache import cache

    try:
        client = cache._cache.get_client(write=True)
        keys = list(client.scan_iter(match=f"{settings.CACHES['default'].get('KEY_PREFIX', '')}:*", count=1000))
        if keys:
            client.delete(*keys)
    except Exception:  # no Redis for this test (unit tests): nothing to clear
        pass
    yield
