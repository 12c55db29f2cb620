"""Real-browser fixtures: Debian's Chromium driven by Playwright, a live server and a real RQ worker.

The worker is a separate `manage.py rqworker` process on the test database, so the browser sees what a
user would: jobs queued by a page, run by a worker, progress polled by the page.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.workers import start_worker, stop_worker

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "e2e"

# Playwright's sync API runs an event loop in this thread; the ORM calls made by fixtures are safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def pytest_collection_modifyitems(config, items):
    if not Path(CHROMIUM).exists():
        skip = pytest.mark.skip(reason=f"{CHROMIUM} not installed (run_tests.sh installs Debian's chromium as root)")
        for item in items:
            if "e2e" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    p = context.new_page()
    p.set_default_timeout(20_000)
    yield p
    context.close()


@pytest.fixture
def shot():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    counter = {"n": 0}

    def _shot(page, name):
        counter["n"] += 1
        path = ARTIFACTS / f"{counter['n']:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return _shot


@pytest.fixture
def live_worker(transactional_db, redis_conn):
    """A real `rqworker default gpu` process on the test database and the test Redis."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    proc = start_worker(("default", "gpu"), ARTIFACTS / "worker.log")
    try:
        yield proc
    finally:
        stop_worker(proc)
