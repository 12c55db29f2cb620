"""Rate limits hold across gunicorn workers: the counters live in the shared Redis cache, not in each process.

Three sync workers, one new connection per request (so the requests spread over the workers): a limit of 6 reads
a minute lets exactly 6 through, and 6 failed sign-ins for one username lock it on every worker. With a
per-process cache each worker would let its own 6 through.
"""
from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time

import pytest

from tests.workers import ROOT, kill_worker_and_horses, worker_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


@pytest.mark.slow
def test_limits_are_shared_by_gunicorn_workers(transactional_db, django_user_model, tmp_path):
    from rest_framework.authtoken.models import Token

    user = django_user_model.objects.create_user("shared", password="pw-shared-123")
    key = Token.objects.create(user=user).key
    port = _free_port()
    env = {**worker_env(), "API_RATE_READ": "6/minute", "LOGIN_FAILED_RATE_LIMIT": "100/m/ip,4/m/key"}
    log = open(tmp_path / "gunicorn.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "piggyback.wsgi:application", "--bind",
                             f"127.0.0.1:{port}", "--workers", "3", "--timeout", "300", "--log-level", "warning",
                             "--access-logfile", str(tmp_path / "access.log"), "--access-logformat", "%(p)s %(r)s %(s)s"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                if _request(port, "GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()[-3000:]
            time.sleep(0.5)
        auth = {"Authorization": f"Token {key}"}
        codes = [_request(port, "GET", "/api/v1/projects/", headers=auth)[0] for _ in range(12)]
        assert codes == [200] * 6 + [429] * 6, codes
        status, headers, body = _request(port, "GET", "/api/v1/datasets/", headers=auth)
        assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60 and b"6 per minute" in body

        form = {"Content-Type": "application/json"}
        bad = json.dumps({"username": "shared", "password": "wrong"})
        codes = [_request(port, "POST", "/api/v1/auth/token/", bad, form)[0] for _ in range(6)]
        assert codes == [400] * 4 + [429] * 2, codes
        good = json.dumps({"username": "shared", "password": "pw-shared-123"})
        assert _request(port, "POST", "/api/v1/auth/token/", good, form)[0] == 429
        # the requests really were spread over the workers (access log: worker pid, request, status)
        served_by = {line.split()[0] for line in (tmp_path / "access.log").read_text().splitlines() if "/api/" in line}
        assert len(served_by) >= 2, served_by
    finally:
        kill_worker_and_horses(proc)
