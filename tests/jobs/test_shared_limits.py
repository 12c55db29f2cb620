"""Rate limits hold across web processes: the counters live in the shared Redis cache, not in each process.

Two gunicorn servers on two ports, each with its own worker process, and the requests alternate between them (so
which process serves a request is decided by the test, not by the kernel's accept order, which may hand every
sequential connection to the same worker): a limit of 6 reads a minute lets exactly 6 through in all, and failed
sign-ins for one username lock it on both. With a per-process cache each process would let its own 6 through.
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


def _start_gunicorn(port, env, tmp_path, name):
    log = open(tmp_path / f"{name}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "piggyback.wsgi:application", "--bind",
                             f"127.0.0.1:{port}", "--workers", "1", "--timeout", "300", "--log-level", "warning",
                             "--access-logfile", str(tmp_path / f"{name}-access.log"),
                             "--access-logformat", "%(p)s %(r)s %(s)s"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return proc


def _wait_healthy(port, tmp_path, name):
    deadline = time.monotonic() + 240
    while True:
        try:
            if _request(port, "GET", "/healthz")[0] == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, (tmp_path / f"{name}.log").read_text()[-3000:]
        time.sleep(0.5)


@pytest.mark.slow
def test_limits_are_shared_by_web_processes(transactional_db, django_user_model, tmp_path):
    from rest_framework.authtoken.models import Token

    user = django_user_model.objects.create_user("shared", password="pw-shared-123")
    key = Token.objects.create(user=user).key
    env = {**worker_env(), "API_RATE_READ": "6/minute", "LOGIN_FAILED_RATE_LIMIT": "100/m/ip,4/m/key"}
    ports = [_free_port(), _free_port()]
    while ports[1] == ports[0]:
        ports[1] = _free_port()
    procs = [_start_gunicorn(port, env, tmp_path, f"web{i}") for i, port in enumerate(ports)]
    try:
        for i, port in enumerate(ports):
            _wait_healthy(port, tmp_path, f"web{i}")
        auth = {"Authorization": f"Token {key}"}
        codes = [_request(ports[i % 2], "GET", "/api/v1/projects/", headers=auth)[0] for i in range(12)]
        assert codes == [200] * 6 + [429] * 6, codes
        for port in ports:
            status, headers, body = _request(port, "GET", "/api/v1/datasets/", headers=auth)
            assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60 and b"6 per minute" in body

        form = {"Content-Type": "application/json"}
        bad = json.dumps({"username": "shared", "password": "wrong"})
        codes = [_request(ports[i % 2], "POST", "/api/v1/auth/token/", bad, form)[0] for i in range(6)]
        assert codes == [400] * 4 + [429] * 2, codes
        good = json.dumps({"username": "shared", "password": "pw-shared-123"})
        assert [_request(port, "POST", "/api/v1/auth/token/", good, form)[0] for port in ports] == [429, 429]
        # each server's access log: its own worker served its share of the API requests
        pids = []
        for i in range(2):
            lines = [line for line in (tmp_path / f"web{i}-access.log").read_text().splitlines() if "/api/" in line]
            assert len(lines) == 6 + 1 + 3 + 1, lines
            pids.append({line.split()[0] for line in lines})
        assert len(pids[0] | pids[1]) == 2, pids
    finally:
        for proc in procs:
            kill_worker_and_horses(proc)
