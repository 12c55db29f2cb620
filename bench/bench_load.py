"""Load test of the serving stack on loopback: gunicorn + a real RQ worker + PostgreSQL + Redis.

It sets up everything it needs and removes it again (try/finally + atexit):

* a PostgreSQL database of its own (``piggyback_load_<pid>``, dropped at the end), Redis db 15 (flushed
  before and after), temporary MEDIA_ROOT / WORKER_CACHE_DIR / PIGGYBACK_VAR_DIR;
* migrations, a user with an API token and a session, a project, a succeeded TrainingRun whose output
  folder holds ``baseline-rnn`` trained here with reduced parameters on a few hundred easy-VQA questions
  (this measures serving, not accuracy);
* ``gunicorn piggyback.wsgi:application`` on 127.0.0.1 (one or more ``WORKERSxTHREADS`` configurations,
  each measured in turn) and ``manage.py rqworker default gpu``.

Per configuration it warms up (every web worker loads torch + the model), then sends a bounded number of
requests from a thread pool (stdlib ``http.client``, one keep-alive connection per client thread):

* phase ``predict``: ``POST /api/v1/training-runs/{id}/predict/`` (multipart easy-VQA test image + question,
  Token auth) only;
* phase ``mixed``: predict interleaved with the list endpoints ``GET /api/v1/projects/``,
  ``/api/v1/predictions/``, ``/api/v1/datasets/``, the project page (session cookie) and the first GET of
  the boxes overlay of an earlier answer (which draws it: overlays are drawn lazily).

It prints a markdown table per configuration and phase (requests, errors, req/s, p50/p90/p99 ms) and
writes ``bench/RESULTS-load.md``.

    .venv/bin/python bench/bench_load.py [--configs 2x4,3x2] [--requests 1000] [--concurrency 20]
"""
from __future__ import annotations

import argparse
import atexit
import http.client
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
PG_ADMIN_URL = os.environ.get("LOAD_PG_URL", "postgres://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("LOAD_REDIS_URL", "redis://127.0.0.1:6379/15")
HOST = "127.0.0.1"

_CLEANUPS: list = []


def cleanup() -> None:
    while _CLEANUPS:
        fn = _CLEANUPS.pop()
        try:
            fn()
        except Exception as exc:  # keep cleaning the rest
            print(f"cleanup: {type(exc).__name__}: {exc}", file=sys.stderr)


atexit.register(cleanup)


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


# ------------------------------------------------------------------------------------------ environment
def make_environment() -> dict:
    work = Path(tempfile.mkdtemp(prefix="pb-load-"))
    _CLEANUPS.append(lambda: shutil.rmtree(work, ignore_errors=True))
    db_name = f"piggyback_load_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    env = {
        "DATABASE_URL": f"{PG_ADMIN_URL}/{db_name}", "REDIS_URL": REDIS_URL, "DJANGO_SETTINGS_MODULE": "piggyback.settings",
        "MEDIA_ROOT": str(work / "media"), "WORKER_CACHE_DIR": str(work / "cache"), "PIGGYBACK_VAR_DIR": str(work / "var"),
        "DEBUG": "0", "DJANGO_ENV": "development", "LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error", "PYTHONUNBUFFERED": "1",
    }
    os.environ.update(env)
    import psycopg

    with psycopg.connect(f"{PG_ADMIN_URL}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')

    def drop():
        from django.db import connections

        connections.close_all()
        with psycopg.connect(f"{PG_ADMIN_URL}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        print(f"dropped database {db_name}")

    _CLEANUPS.append(drop)
    return {"work": work, "db": db_name, "env": env}


def flush_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


def setup_data(work: Path, train_items: int, epochs: int) -> dict:
    """Migrate, create user/token/session/project and a succeeded run with a freshly trained baseline."""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from rest_framework.authtoken.models import Token

    from datasets_app.models import Dataset
    from gpu_worker.easyvqa import load_items
    from gpu_worker.train import train_model
    from piggyback.files import local_dir
    from piggyback.project_services import create_project
    from training_app.models import PretrainedModel, TrainingRun

    t0 = time.perf_counter()
    call_command("migrate", interactive=False, verbosity=0)
    user = get_user_model().objects.create_user("loadtest", password="load-test-pw-123")
    token = Token.objects.create(user=user).key
    # One account stands for the traffic of many clients here, far past one user's default API limits (600
    # predictions and 1,200 reads a minute): staff's per-user override raises them, as an operator would for a
    # heavy integration. The throttle still runs on every request, so its cost is part of the measurement.
    from piggyback.models import RateLimitOverride

    RateLimitOverride.objects.create(user=user, multiplier=1000, reason="load benchmark: many clients, one account")
    client = Client()
    client.force_login(user)
    session = client.cookies["sessionid"].value
    project = create_project(user, "Load test", "")
    model, _ = PretrainedModel.objects.get_or_create(
        key="baseline-rnn", defaults=dict(name="Baseline CNN + GRU", family="baseline", task="classify",
                                          registry_key="baseline-rnn", available=True, can_explain=True))
    ds = Dataset.objects.create(project=project, name="easy", status="succeeded", images_file="x.zip",
                                questions_file="x.csv", has_answers=True)
    run = TrainingRun.objects.create(project=project, dataset=ds, model=model, status="running", name="load baseline",
                                     created_by=user)
    prefix = f"projects/{project.pk}/runs/{run.pk}"
    items, image_root = load_items("train", max_images=max(8, train_items // 8), seed=1)
    print(f"setup: migrated in {time.perf_counter() - t0:.1f} s; training baseline-rnn on {min(train_items, len(items))} "
          f"easy-VQA questions, {epochs} epochs…", flush=True)
    result = train_model("baseline-rnn", items[:train_items], image_root, str(local_dir(prefix)),
                         {"epochs": epochs, "batch_size": 32, "val_fraction": 0.1, "learning_rate": 5e-3, "seed": 0})
    run._update(status="succeeded", output_dir=prefix, vqa_accuracy=result.get("vqa_accuracy"))
    test_items, test_root = load_items("test", max_images=20, seed=7)
    images = {}
    for it in test_items:
        if it["image"] not in images:
            images[it["image"]] = (Path(test_root) / it["image"]).read_bytes()
    questions = [(images[it["image"]], it["image"], it["question"]) for it in test_items]
    print(f"setup: done in {time.perf_counter() - t0:.1f} s (validation VQA accuracy {result.get('vqa_accuracy')} %)",
          flush=True)
    return {"token": token, "session": session, "project": project.pk, "run": run.pk, "questions": questions,
            "train": result}


# ------------------------------------------------------------------------------------------ processes
def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    fh = open(log, "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)

    def stop():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        fh.close()

    _CLEANUPS.append(stop)
    proc.stop = stop  # type: ignore[attr-defined]
    return proc


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError("gunicorn did not become healthy")


# ------------------------------------------------------------------------------------------ client
class Client:
    """One keep-alive connection per thread; returns (ok, ms, body)."""

    def __init__(self, port: int, data: dict):
        self.port, self.data = port, data
        self.local = threading.local()
        self.boundary = uuid.uuid4().hex
        self.q = itertools.count()

    def _conn(self):
        if getattr(self.local, "conn", None) is None:
            self.local.conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        return self.local.conn

    def request(self, method, path, body=None, headers=None, expect=200):
        t0 = time.perf_counter()
        try:
            conn = self._conn()
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            payload = resp.read()
            ok = resp.status == expect
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                self.local.conn = None
        except (OSError, http.client.HTTPException) as exc:
            self.local.conn = None
            return False, (time.perf_counter() - t0) * 1000, str(exc).encode()
        return ok, (time.perf_counter() - t0) * 1000, payload

    def api(self, path):
        return self.request("GET", path, headers={"Authorization": f"Token {self.data['token']}"})

    def page(self, path):
        return self.request("GET", path, headers={"Cookie": f"sessionid={self.data['session']}"})

    def predict(self):
        image, name, question = self.data["questions"][next(self.q) % len(self.data["questions"])]
        b = self.boundary
        body = b"".join([
            f'--{b}\r\nContent-Disposition: form-data; name="question"\r\n\r\n{question}\r\n'.encode(),
            f'--{b}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            f"Content-Type: image/png\r\n\r\n".encode(), image, f"\r\n--{b}--\r\n".encode()])
        return self.request("POST", f"/api/v1/training-runs/{self.data['run']}/predict/", body=body, expect=201,
                            headers={"Authorization": f"Token {self.data['token']}",
                                     "Content-Type": f"multipart/form-data; boundary={b}"})


def percentile(values, q):
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def run_phase(client: Client, plan: list[str], concurrency: int, max_seconds: float) -> dict:
    """Send the planned requests (endpoint names) from ``concurrency`` threads; stops at ``max_seconds``."""
    overlays: list[str] = []
    lock = threading.Lock()
    stats = {name: {"ms": [], "errors": 0, "first_error": ""} for name in dict.fromkeys(plan)}
    deadline = time.perf_counter() + max_seconds
    p = client.data["project"]
    calls = {
        "predict": client.predict,
        "GET /api/v1/projects/": lambda: client.api("/api/v1/projects/"),
        "GET /api/v1/predictions/": lambda: client.api(f"/api/v1/predictions/?project={p}"),
        "GET /api/v1/datasets/": lambda: client.api("/api/v1/datasets/"),
        "project page (session)": lambda: client.page(f"/projects/{p}/"),
    }

    def one(name):
        if time.perf_counter() > deadline:
            return
        if name == "overlay, first GET (draws it)":
            with lock:
                url = overlays.pop() if overlays else None
            if url is None:
                name = "predict"
            else:
                ok, ms, body = client.api(url)
                ok = ok and body[:8] == b"\x89PNG\r\n\x1a\n"
                _record(name, ok, ms, body)
                return
        ok, ms, body = calls[name]()
        if name == "predict" and ok:
            with lock:
                overlays.append(json.loads(body)["overlay"].split(f":{client.port}", 1)[-1])
        _record(name, ok, ms, body)

    def _record(name, ok, ms, body):
        with lock:
            s = stats.setdefault(name, {"ms": [], "errors": 0, "first_error": ""})
            if ok:
                s["ms"].append(ms)
            else:
                s["errors"] += 1
                s["first_error"] = s["first_error"] or body[:200].decode(errors="replace")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, plan))
    wall = time.perf_counter() - t0
    out = {}
    for name, s in stats.items():
        n = len(s["ms"]) + s["errors"]
        if not n:
            continue
        out[name] = {"requests": n, "errors": s["errors"], "rps": n / wall, "p50": percentile(s["ms"], .5),
                     "p90": percentile(s["ms"], .9), "p99": percentile(s["ms"], .99), "max": max(s["ms"] or [0]),
                     "first_error": s["first_error"]}
    total = sum(v["requests"] for v in out.values())
    out["_all"] = {"requests": total, "wall": wall, "rps": total / wall, "planned": len(plan)}
    return out


def warm_up(client: Client, workers: int, concurrency: int, max_seconds: float = 240) -> float:
    """Until a whole round of concurrent predictions answers fast (every worker has loaded torch + model)."""
    t0 = time.perf_counter()
    fast_rounds = 0
    while time.perf_counter() - t0 < max_seconds:
        res = run_phase(client, ["predict"] * max(concurrency, 4 * workers) + ["GET /api/v1/projects/",
                        "GET /api/v1/predictions/", "GET /api/v1/datasets/", "project page (session)"] * 2,
                        concurrency, 60)
        worst = max(v["max"] for k, v in res.items() if k != "_all")
        errors = sum(v["errors"] for k, v in res.items() if k != "_all")
        fast_rounds = fast_rounds + 1 if worst < 1000 and not errors else 0
        if fast_rounds >= 2:
            break
    return time.perf_counter() - t0


def table(res: dict) -> list[str]:
    lines = ["| endpoint | requests | errors | req/s | p50 ms | p90 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, v in res.items():
        if name == "_all":
            continue
        lines.append(f"| {name} | {v['requests']:,} | {v['errors']} | {v['rps']:.1f} | {v['p50']:.1f} | {v['p90']:.1f} | "
                     f"{v['p99']:.1f} | {v['max']:.1f} |")
    a = res["_all"]
    lines.append(f"| **all** | {a['requests']:,} of {a['planned']:,} planned | "
                 f"{sum(v['errors'] for k, v in res.items() if k != '_all')} | {a['rps']:.1f} | | | | |")
    return lines


NOTES_MARK = "<!-- notes: kept when the script rewrites this file -->"
MIXED = ["predict"] * 4 + ["overlay, first GET (draws it)", "GET /api/v1/projects/", "GET /api/v1/predictions/",
                           "GET /api/v1/datasets/", "project page (session)", "GET /api/v1/projects/"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="4x1", help="gunicorn WORKERSxTHREADS, comma separated (each measured)")
    ap.add_argument("--requests", type=int, default=1000, help="requests per phase")
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--max-seconds", type=float, default=180, help="time bound of each phase")
    ap.add_argument("--torch-threads", default="1", help="PIGGYBACK_TORCH_THREADS of the web workers")
    ap.add_argument("--train-items", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="measure each configuration this many times")
    ap.add_argument("--out", default=str(ROOT / "bench" / "RESULTS-load.md"))
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _on_signal)

    envinfo = make_environment()
    work, env = envinfo["work"], {**os.environ}
    flush_redis()
    _CLEANUPS.append(flush_redis)
    data = setup_data(work, args.train_items, args.epochs)
    from django.db import connections

    connections.close_all()
    rq = start([PY, "manage.py", "rqworker", "default", "gpu"], env, work / "rqworker.log")
    lines_out = []
    results = []
    for spec in args.configs.split(","):
        # WORKERSxTHREADS; threads 1 = gunicorn's sync worker (no keep-alive), a "g" suffix forces gthread
        gthread = spec.lower().endswith("g")
        workers, threads = (int(x) for x in spec.lower().rstrip("g").split("x"))
        port = free_port()
        web_env = {**env, "PIGGYBACK_TORCH_THREADS": args.torch_threads, "OMP_NUM_THREADS": args.torch_threads}
        web = start([PY, "-m", "gunicorn", "piggyback.wsgi:application", "--bind", f"{HOST}:{port}",
                     "--workers", str(workers), "--threads", str(threads), "--timeout", "120",
                     *(["--worker-class", "gthread"] if gthread else []),
                     "--keep-alive", "5", "--log-level", "warning"], web_env, work / f"gunicorn-{spec}.log")
        try:
            wait_healthy(port, web)
            client = Client(port, data)
            warm_s = warm_up(client, workers, args.concurrency)
            for attempt in range(1, args.repeat + 1):
                predict = run_phase(client, ["predict"] * args.requests, args.concurrency, args.max_seconds)
                mixed = run_phase(client, list(itertools.islice(itertools.cycle(MIXED), args.requests)),
                                  args.concurrency, args.max_seconds)
                load = os.getloadavg()[0]
                results.append((spec, attempt, predict, mixed, warm_s, load))
                for title, res in (("predict only", predict), ("mixed", mixed)):
                    kind = "gthread" if gthread or threads > 1 else "sync"
                    block = [f"### gunicorn {workers} workers x {threads} threads ({kind}), run {attempt}: {title} "
                             f"({args.concurrency} concurrent, load average {load:.1f})", "", *table(res), ""]
                    print("\n".join(block), flush=True)
                    lines_out += block
                    for name, v in res.items():
                        if name != "_all" and v["errors"]:
                            print(f"  first error of {name}: {v['first_error']}", flush=True)
        finally:
            web.stop()
    rq.stop()
    best = min(results, key=lambda r: r[2]["predict"]["p99"]) if results else None
    write_results(args, data, lines_out, best)


def write_results(args, data, blocks, best) -> None:
    import torch

    train = data["train"]
    head = [
        "# Load test (`bench/bench_load.py`)", "",
        f"Machine: {os.cpu_count()} CPU cores, no GPU, torch {torch.__version__}; everything on loopback "
        "(gunicorn, `manage.py rqworker default gpu`, PostgreSQL, Redis db 15) and the load generator on the "
        "same cores (stdlib `http.client`, one keep-alive connection per client thread).",
        f"Model: baseline-rnn trained by the script on {train.get('num_train', 0):,} easy-VQA questions, "
        f"{train.get('epochs_run')} epochs (validation VQA accuracy {train.get('vqa_accuracy')} %: this measures "
        "serving, not accuracy). Web workers: `PIGGYBACK_TORCH_THREADS="
        f"{args.torch_threads}`. {args.requests:,} requests per phase at {args.concurrency} concurrent.",
        "",
    ]
    if best:
        spec, attempt, predict, mixed, warm_s, load = best
        head += [f"## Best configuration: gunicorn `{spec}` (workers x threads; run {attempt})", "",
                 "Predict only:", "", *table(predict), "", "Mixed (predict + lists + first overlay GET):", "",
                 *table(mixed), ""]
    text = "\n".join(head + ["## All runs", ""] + blocks +
                     ["Reproduce: `.venv/bin/python bench/bench_load.py --configs 2x4,3x2,2x2 --requests 1000 "
                      "--concurrency 20` (creates and drops its own database).", ""])
    out = Path(args.out)
    # hand-written reading of the numbers (below the marker) survives a re-run
    old = out.read_text() if out.exists() else ""
    if NOTES_MARK in old:
        text += "\n" + old[old.index(NOTES_MARK):]
    out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup()
