"""Schema-driven fuzzing of the whole REST API (schemathesis) against a live, seeded stack.

gunicorn serves the app on loopback, on the test database, seeded with the permission matrix's world (a project
with datasets, training runs, an evaluation and predictions with stored files). Schemathesis reads
``/api/schema/``, authenticates with the project owner's token and sends every operation generated valid and
invalid requests (fixed seed, bounded examples per operation). Path ids point at the seeded objects, so requests
reach the real code paths instead of stopping at 404. Asserted:

* ``not_a_server_error``: no request is answered 5xx;
* ``status_code_conformance``: every status code answered is documented in the schema (the common error codes
  come from ``piggyback.schema.document_common_errors``).

The figures (operations, test cases, failures) are printed; ``-s`` shows them.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.api.perm_fixtures import build_world, destroy_world, train_tiny_baseline
from tests.workers import worker_env

ROOT = Path(__file__).resolve().parents[2]
SEED = 20261130
MAX_EXAMPLES = int(os.environ.get("PIGGYBACK_FUZZ_EXAMPLES", "10"))
CHECKS = "not_a_server_error,status_code_conformance"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(w, spare_project: int, uploads: dict) -> str:
    """Per-operation path parameters: the seeded objects (DELETE of a project or an upload hits a spare one).

    ``DELETE /api/v1/auth/token/`` is disabled: it revokes the token the request carries, which is the fuzzer's
    own (schemathesis sends one set of headers to every operation), and every later request would answer 401.
    Revocation itself is tested in tests/api/test_throttling.py and tests/api/test_audit.py."""
    ids = w.ids
    rules = [
        ("^/api/v1/projects/\\{id\\}/$", "DELETE", {"path.id": spare_project}),
        ("^/api/v1/projects/\\{id\\}/leaderboard/", None, {"path.id": ids["p"], "query.dataset": ids["ds"]}),
        ("^/api/v1/uploads/\\{upload_id\\}/", "DELETE", {"path.upload_id": uploads["spare"]}),
        ("^/api/v1/uploads/\\{upload_id\\}/", None, {"path.upload_id": uploads["main"]}),
        ("^/api/v1/projects/\\{id\\}/", None, {"path.id": ids["p"]}),
        ("^/api/v1/datasets/\\{id\\}/items/\\{item_pk\\}/", None, {"path.id": ids["ds"], "path.item_pk": ids["item"]}),
        ("^/api/v1/datasets/\\{id\\}/(cancel|retry)/", None, {"path.id": ids["ds_failed"]}),
        ("^/api/v1/datasets/\\{id\\}/", None, {"path.id": ids["ds"]}),
        ("^/api/v1/training-runs/\\{id\\}/", None, {"path.id": ids["run"]}),
        ("^/api/v1/evaluations/\\{id\\}/", None, {"path.id": ids["ev"]}),
        ("^/api/v1/predictions/\\{id\\}/", None, {"path.id": ids["owner_pred"]}),
        ("^/api/v1/models/\\{key\\}/predict/", None, {"path.key": ids["zs_key"], "query.project": ids["p"]}),
        ("^/api/v1/models/\\{key\\}/", None, {"path.key": ids["baseline_key"]}),
    ]
    lines = ["[[operations]]", "include-path = '/api/v1/auth/token/'", 'include-method = "DELETE"',
             "enabled = false", ""]
    for regex, method, params in rules:
        lines.append("[[operations]]")
        lines.append(f"include-path-regex = '{regex}'")
        if method:
            lines.append(f'include-method = "{method}"')
        else:
            lines.append('exclude-method = "DELETE"' if regex.startswith("^/api/v1/projects/") else "")
        lines.append("parameters = { " + ", ".join(f'"{k}" = {json.dumps(v)}' for k, v in params.items()) + " }")
        lines.append("")
    return "\n".join(line for line in lines if line is not None)


def _seed_upload(user) -> str:
    """An unfinished tus upload of ``user`` (1 KiB announced, nothing sent yet) for the uploads/{id} operations."""
    import uuid
    from datetime import timedelta

    from django.utils import timezone

    from datasets_app.models import ResumableUpload
    from piggyback import files

    uid = uuid.uuid4().hex
    name = f"uploads/resumable/{user.pk}/{uid}.part"
    files.create_empty(name)
    ResumableUpload.objects.create(id=uid, user=user, length=1024, filename="fuzz.zip", storage_name=name,
                                   expires_at=timezone.now() + timedelta(hours=2))
    return uid


@pytest.fixture(scope="module")
def fuzz_world(django_db_setup, django_db_blocker, tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz-baseline")
    model_dir = train_tiny_baseline(out)
    with django_db_blocker.unblock():
        from rest_framework.authtoken.models import Token

        from piggyback.project_services import create_project

        w = build_world(model_dir)
        spare = create_project(w.users["owner"], "Fuzz spare", "deleted by the fuzzer")
        token = Token.objects.create(user=w.users["owner"])
        uploads = {"main": _seed_upload(w.users["owner"]), "spare": _seed_upload(w.users["owner"])}
        try:
            yield w, spare.pk, token.key, uploads
        finally:
            destroy_world(w)


@pytest.fixture(scope="module")
def live_server_url(fuzz_world, tmp_path_factory):
    import django_rq

    port = _free_port()
    log_path = tmp_path_factory.mktemp("fuzz-web") / "gunicorn.log"
    # one user sends every request: generous per-user rates so the run measures the API, not the throttle
    rates = {f"API_RATE_{scope}": "100000/minute" for scope in ("READ", "WRITE", "PREDICT", "UPLOAD", "JOB")}
    env = {**worker_env(), "DJANGO_ENV": "development", "PIGGYBACK_TORCH_THREADS": "1", "DEBUG": "0", **rates}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "piggyback.wsgi:application", "--bind", f"127.0.0.1:{port}",
             "--workers", "2", "--timeout", "120"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=5)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("gunicorn did not start:\n" + log_path.read_text()[-3000:])
                time.sleep(0.5)
        yield url, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        django_rq.get_connection("default").flushdb()  # jobs the fuzzer queued (uploads, re-runs) never run


def _figures(text: str) -> dict:
    """Operations tested, test cases generated, and the failures of each check from the CLI summary."""
    figures = {}
    for key, pattern in (("operations", r"Tested:\s+(\d+)"), ("test_cases", r"(\d+) generated"),
                         ("server_errors", r"ST101 Server error:\s+(\d+)"),
                         ("undocumented_status", r"ST103 Undocumented status code:\s+(\d+)"),
                         ("network_errors", r"Network Error:\s+(\d+)")):
        m = re.search(pattern, text)
        figures[key] = int(m.group(1)) if m else 0
    return figures


def _tracebacks(server_log: str) -> str:
    """The server's tracebacks (what a 500 was), for the failure message."""
    blocks = re.findall(r"(ERROR django\.request.*?)(?=\n\S*\d{4}-\d\d-\d\d |\Z)", server_log, re.S)
    return "\n".join(b[-2500:] for b in blocks[:5])


@pytest.mark.slow
def test_fuzzed_api_never_answers_5xx_and_only_documented_codes(db, fuzz_world, live_server_url, tmp_path):
    world, spare, token, uploads = fuzz_world
    url, log_path = live_server_url
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(world, spare, uploads))
    cmd = [str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config), "run", f"{url}/api/schema/",
           "--header", f"Authorization: Token {token}",
           "--header", "Tus-Resumable: 1.0.0", "--checks", CHECKS, "--max-examples", str(MAX_EXAMPLES),
           "--seed", str(SEED),
           "--phases", "examples,coverage,fuzzing", "--workers", "2", "--request-timeout", "120",
           "--max-failures", "200", "--no-color", "--output-truncate", "true", "--continue-on-failure"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.api.schemathesis_hooks",
                            "PYTHONPATH": str(ROOT)})
    text = r.stdout + r.stderr
    figures = _figures(text)
    print(text[-6000:])
    print("FUZZ FIGURES", figures)
    detail = text[-12000:] + "\n--- server tracebacks ---\n" + _tracebacks(log_path.read_text())
    assert figures["operations"] >= 40 and figures["test_cases"] > 0, detail
    assert figures["server_errors"] == 0 and figures["undocumented_status"] == 0, detail
    assert r.returncode == 0, detail
