"""Scale benchmark: a VQAv2-shaped dataset through a resumable (tus) upload, cleaning on a real worker.

    .venv/bin/python bench/bench_scale.py [--photos 11000] [--questions 440000] [--quality 95]

It builds, in a temporary folder, ``--photos`` 640x480 photo-like JPEGs named like COCO
(``COCO_train2014_000000000042.jpg``) in one ZIP plus the two official JSON files
(``{"info", ..., "questions": [...]}`` and ``{"info", ..., "annotations": [...]}`` with ten answers per
question), then, on a database and media folder of its own (see bench_load.py):

1. starts gunicorn (2 sync workers) and ``manage.py rqworker default``;
2. uploads the three files with the tus protocol (``/api/v1/uploads/``, 16 MiB PATCHes); the ZIP's upload
   is **interrupted** half-way (a PATCH that declares 16 MiB, sends part of it and drops the connection),
   then resumed from the offset HEAD reports;
3. ``POST /api/v1/datasets/`` with ``images_upload`` / ``questions_upload`` / ``annotations_upload`` and
   waits for the cleaning;
4. samples the resident memory of every process every 0.25 s: the largest gunicorn process, and the
   worker together with its work horse and the cleaning pool.

Prints a markdown table: sizes, upload time and MB/s, cleaning time and photos/s, peak RSS of web and
worker. ``--out`` also writes it to a file.
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import signal
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("LOAD_REDIS_URL", os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15"))

import bench_load as infra  # noqa: E402

CHUNK = 16 * 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}


# ------------------------------------------------------------------------------------------ the dataset
def photo(rng: np.random.Generator, noise: np.ndarray, quality: int) -> bytes:
    field = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((640, 480), Image.BICUBIC)
    pixels = np.asarray(field, dtype=np.int16) + noise[rng.integers(0, len(noise))]
    buf = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def build_dataset(work: Path, photos: int, questions: int, quality: int) -> dict:
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 14, (8, 480, 640, 3)).astype(np.int16)
    zp, qp, ap = work / "train2014.zip", work / "v2_OpenEnded_mscoco_train2014_questions.json", \
        work / "v2_mscoco_train2014_annotations.json"
    with zipfile.ZipFile(zp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for i in range(photos):
            zf.writestr(f"train2014/COCO_train2014_{i + 1:012d}.jpg", photo(rng, noise, quality))
    words = ["What", "color", "is", "the", "How", "many", "people", "are", "in", "picture", "Is", "there", "a", "dog"]
    answers = ["yes", "no", "2", "red", "blue", "dog", "cat", "1", "white", "black"]
    with open(qp, "w") as q, open(ap, "w") as a:
        q.write('{"info": {"description": "bench"}, "task_type": "Open-Ended", "data_type": "mscoco", '
                '"license": {"name": "CC"}, "data_subtype": "train2014", "questions": [')
        a.write('{"info": {"description": "bench"}, "license": {"name": "CC"}, "data_subtype": "train2014", '
                '"annotations": [')
        for n in range(questions):
            image_id = n % photos + 1
            qid = image_id * 1000 + n // photos
            text = " ".join(words[(n + k) % len(words)] for k in range(4 + n % 5)) + f" (view {n // photos})?"
            q.write(("," if n else "") + json.dumps({"image_id": image_id, "question": text, "question_id": qid}))
            given = [answers[(n + k // 3) % len(answers)] for k in range(10)]
            a.write(("," if n else "") + json.dumps({
                "question_type": "what color is the", "multiple_choice_answer": given[0],
                "answers": [{"answer": x, "answer_confidence": "yes", "answer_id": k + 1} for k, x in enumerate(given)],
                "image_id": image_id, "answer_type": "other", "question_id": qid}))
        q.write("]}")
        a.write('], "data_type": "mscoco"}')
    return {"zip": zp, "questions": qp, "annotations": ap}


# ------------------------------------------------------------------------------------------ tus client
def _conn(port):
    return http.client.HTTPConnection(infra.HOST, port, timeout=600)


def _request(port, method, path, token, headers=None, body=None):
    c = _conn(port)
    c.request(method, path, body=body, headers={"Authorization": f"Token {token}", **TUS, **(headers or {})})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, dict(r.getheaders()), data


def tus_upload(port: int, token: str, path: Path, interrupt: bool, project: int | None = None) -> tuple[str, bool]:
    """Send ``path`` through tus; with ``project`` in the metadata, as the upload page does (its dataset then
    takes the file where it lies)."""
    import base64

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    size = path.stat().st_size
    meta = f"filename {b64(path.name)}" + (f",project {b64(str(project))}" if project is not None else "")
    status, headers, body = _request(port, "POST", "/api/v1/uploads/", token, {
        "Upload-Length": str(size), "Upload-Metadata": meta})
    assert status == 201, (status, body[:300])
    location = headers["Location"].split(str(port), 1)[-1]
    offset, interrupted = 0, False
    with open(path, "rb") as fh:
        while offset < size:
            fh.seek(offset)
            data = fh.read(CHUNK)
            if interrupt and not interrupted and offset + len(data) > size // 2:
                # declare the whole piece, send a third of it, drop the connection
                c = _conn(port)
                c.putrequest("PATCH", location)
                for k, v in {"Authorization": f"Token {token}", **TUS, "Upload-Offset": str(offset),
                             "Content-Type": "application/offset+octet-stream",
                             "Content-Length": str(len(data))}.items():
                    c.putheader(k, v)
                c.endheaders()
                c.send(data[: len(data) // 3])
                c.sock.close()
                interrupted = True
                time.sleep(1.0)
                status, headers, _ = _request(port, "HEAD", location, token)
                assert status == 200, status
                offset = int(headers["Upload-Offset"])
                continue
            status, headers, body = _request(port, "PATCH", location, token, {
                "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}, data)
            assert status == 204, (status, body[:300])
            offset = int(headers["Upload-Offset"])
    return location.rstrip("/").rsplit("/", 1)[-1], interrupted


# ------------------------------------------------------------------------------------------ memory
class PeakRSS(threading.Thread):
    """Samples every 0.25 s: the largest web process's RSS; for the worker with its children (work horse,
    cleaning pool), the sum of their RSS (pages they share, e.g. the work horse's copy-on-write inheritance
    from the rqworker, counted once per process) and the sum of their PSS (shared pages split between the
    processes that map them, so the total is the memory the tree really holds)."""

    def __init__(self, web_pid: int, worker_pid: int):
        super().__init__(daemon=True)
        self.web_pid, self.worker_pid = web_pid, worker_pid
        self.web_max = self.worker_max = self.worker_pss_max = 0
        self.stop_event = threading.Event()

    @staticmethod
    def _procs(pid):
        import psutil

        try:
            p = psutil.Process(pid)
            return [p] + p.children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    @staticmethod
    def _mem(proc, pss: bool = False) -> int:
        import psutil

        try:
            return proc.memory_full_info().pss if pss else proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return 0

    def run(self):
        while not self.stop_event.wait(0.25):
            web = [self._mem(p) for p in self._procs(self.web_pid)]
            worker = self._procs(self.worker_pid)
            self.web_max = max(self.web_max, max(web, default=0))
            self.worker_max = max(self.worker_max, sum(self._mem(p) for p in worker))
            self.worker_pss_max = max(self.worker_pss_max, sum(self._mem(p, pss=True) for p in worker))


# ------------------------------------------------------------------------------------------ phases
PHASES = [("images", "Checking images"), ("storing", "Storing"), ("charts", "charts"), ("saving", "Saving"),
          ("questions", "questions")]   # first match wins: "Saving 440,000 questions" is the saving phase


def _phase(stage: str) -> str:
    for name, marker in PHASES:
        if marker.lower() in stage.lower():
            return name
    return "other"


def _phase_line(start: dict, counts: dict) -> str:
    """Seconds per phase, in order, with the image checks' photos/s (the issue's >= 250 photos/s figure)."""
    seen = [(name, start[name]) for name, _ in PHASES if name in start] + [("end", start["end"])]
    seen.sort(key=lambda kv: kv[1])
    parts = []
    for (name, t0), (_, t1) in zip(seen, seen[1:]):
        part = f"{name} {t1 - t0:.1f} s"
        if name == "images" and t1 > t0:
            part += f" ({counts['images_in'] / (t1 - t0):,.0f} photos/s)"
        parts.append(part)
    return ", ".join(parts)


# ------------------------------------------------------------------------------------------ training
def train_phase(port: int, token: str, dataset_id: int, steps: int, peaks: PeakRSS) -> dict:
    """Start a training run on the cleaned dataset through the API, let it run ``steps`` steps, cancel it;
    the worker's peak RSS is measured from the start of the run (the cleaning's peak is kept apart)."""
    import re

    peaks.worker_max = peaks.worker_pss_max = 0
    t0 = time.perf_counter()
    status, _, body = _request(port, "POST", "/api/v1/training-runs/", token, {"Content-Type": "application/json"},
                               json.dumps({"dataset": dataset_id, "model": "baseline-rnn", "preset": "balanced",
                                           "name": "scale bench"}))
    assert status == 202, (status, body[:500])
    run_id = json.loads(body)["id"]
    stage = ""
    while True:
        status, _, body = _request(port, "GET", f"/api/v1/training-runs/{run_id}/", token)
        r = json.loads(body)
        stage = r.get("stage") or stage
        m = re.search(r"step (\d+)/", stage)
        assert r["status"] in ("queued", "running"), r
        if m and int(m.group(1)) >= steps:
            break
        time.sleep(0.25)
    seconds = time.perf_counter() - t0
    _request(port, "POST", f"/api/v1/training-runs/{run_id}/cancel/", token)
    for _ in range(600):
        status, _, body = _request(port, "GET", f"/api/v1/training-runs/{run_id}/", token)
        if json.loads(body)["status"] not in ("queued", "running"):
            break
        time.sleep(0.5)
    return {"steps": steps, "seconds": seconds, "stage": stage, "worker_peak": peaks.worker_max,
            "worker_pss_peak": peaks.worker_pss_max}


# ------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=11_000)
    ap.add_argument("--questions", type=int, default=440_000)
    ap.add_argument("--quality", type=int, default=97,
                    help="JPEG quality (97: about 230 KB a photo, so 11,000 photos make a ZIP over 2 GiB)")
    ap.add_argument("--data", help="folder to keep the generated files in and reuse on the next run "
                                   "(built there when missing; default: a temporary folder)")
    ap.add_argument("--timeout", type=float, default=6 * 3600)
    ap.add_argument("--out", help="also write the table here")
    ap.add_argument("--train-steps", type=int, default=0,
                    help="then train the default model on the cleaned dataset through the API (balanced preset, "
                         "every question) until this many steps ran, cancel, and report the worker's peak RSS")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, infra._on_signal)  # a stopped run still drops its database and folder

    env = infra.make_environment()
    work = env["work"]
    infra.flush_redis()
    t = time.perf_counter()
    data = Path(args.data) if args.data else work
    files = {"zip": data / "train2014.zip", "questions": data / "v2_OpenEnded_mscoco_train2014_questions.json",
             "annotations": data / "v2_mscoco_train2014_annotations.json"}
    reused = args.data and all(p.exists() for p in files.values())
    if not reused:
        data.mkdir(parents=True, exist_ok=True)
        files = build_dataset(data, args.photos, args.questions, args.quality)
    build_s = time.perf_counter() - t
    sizes = {k: p.stat().st_size for k, p in files.items()}

    import django

    sys.path.insert(0, str(ROOT))
    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from piggyback.project_services import create_project

    call_command("migrate", interactive=False, verbosity=0)
    user = get_user_model().objects.create_user("scalebench", password="scale-bench-pw-123")
    token = Token.objects.create(user=user).key
    project = create_project(user, "Scale bench", "")

    port = infra.free_port()
    penv = {**os.environ, **env["env"]}
    web = infra.start([infra.PY, "-m", "gunicorn", "piggyback.wsgi:application", "--bind", f"{infra.HOST}:{port}",
                       "--workers", "2", "--timeout", "900", "--log-level", "warning"], penv, work / "gunicorn.log")
    queues = ["default", "gpu"] if args.train_steps else ["default"]   # training runs on the "gpu" queue
    worker = infra.start([infra.PY, "manage.py", "rqworker", *queues], penv, work / "worker.log")
    infra.wait_healthy(port, web)
    peaks = PeakRSS(web.pid, worker.pid)
    peaks.start()
    try:
        t = time.perf_counter()
        ids, interrupted = {}, False
        for key in ("zip", "questions", "annotations"):
            ids[key], cut = tus_upload(port, token, files[key], interrupt=(key == "zip"), project=project.pk)
            interrupted |= cut
        upload_s = time.perf_counter() - t
        status, _, body = _request(port, "POST", "/api/v1/datasets/", token, {"Content-Type": "application/json"},
                                   json.dumps({"project": project.pk, "name": "scale", "images_upload": ids["zip"],
                                               "questions_upload": ids["questions"],
                                               "annotations_upload": ids["annotations"]}))
        assert status == 202, (status, body[:500])
        ds_id = json.loads(body)["id"]
        deadline = time.time() + args.timeout
        phase_start: dict = {}   # first time each phase's stage text was seen (polled every 0.5 s)
        while True:
            status, _, body = _request(port, "GET", f"/api/v1/datasets/{ds_id}/", token)
            d = json.loads(body)
            phase_start.setdefault(_phase(d.get("stage") or ""), time.perf_counter())
            if d["status"] in ("succeeded", "failed", "cancelled") or time.time() > deadline:
                break
            time.sleep(0.5)
        phase_start.setdefault("end", time.perf_counter())
        assert d["status"] == "succeeded", d
        from django.utils.dateparse import parse_datetime

        clean_s = (parse_datetime(d["finished_at"]) - parse_datetime(d["started_at"])).total_seconds()
        clean_peaks = (peaks.web_max, peaks.worker_max, peaks.worker_pss_max)
        training = train_phase(port, token, ds_id, args.train_steps, peaks) if args.train_steps else None
    finally:
        peaks.stop_event.set()
        peaks.join()
    c = d["counts"]
    total = sum(sizes.values())
    lines = [
        f"## VQAv2-shaped dataset through a resumable upload ({os.cpu_count()} cores, load average "
        f"{'%.1f / %.1f / %.1f' % os.getloadavg()})", "",
        "| metric | value |", "|---|---|",
        f"| photos / questions | {args.photos:,} / {args.questions:,} |",
        f"| ZIP / questions JSON / annotations JSON | {sizes['zip'] / 2**20:,.0f} MiB / "
        f"{sizes['questions'] / 2**20:,.1f} MiB / {sizes['annotations'] / 2**20:,.1f} MiB "
        f"({'reused from --data' if reused else f'built in {build_s:.0f} s'}) |",
        f"| tus upload of the three files ({'interrupted and resumed' if interrupted else 'not interrupted'}) | "
        f"{upload_s:.1f} s ({total / 2**20 / upload_s:,.1f} MiB/s) |",
        f"| cleaning (worker) | {clean_s:.1f} s, {c['images_in'] / clean_s:,.0f} photos/s, "
        f"{c['rows_in'] / clean_s:,.0f} questions/s |",
        f"| cleaning phases (from the job's stage, polled every 0.5 s) | {_phase_line(phase_start, c)} |",
        f"| kept photos / questions | {c['images_kept']:,} / {c['rows_kept']:,} |",
        f"| peak RSS, largest web process | {clean_peaks[0] / 2**20:,.0f} MB |",
        f"| peak RSS, worker + work horse + cleaning pool | {clean_peaks[1] / 2**20:,.0f} MB (PSS: "
        f"{clean_peaks[2] / 2**20:,.0f} MB) |",
    ]
    if training:
        lines += [
            f"| training (baseline-rnn, balanced preset, all questions): reading items + preparing, to step "
            f"{training['steps']} | {training['seconds']:.1f} s; {training['stage']} |",
            f"| peak RSS during training, worker + work horse | {training['worker_peak'] / 2**20:,.0f} MB (PSS: "
            f"{training['worker_pss_peak'] / 2**20:,.0f} MB) |",
        ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
