"""Write one benchmark's markdown section into bench/RESULTS.md (sections replaced by name)."""
from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# ML-core benchmarks (baseline models, easy-VQA)\n"


def machine_line() -> str:
    try:
        load = "load average %.1f / %.1f / %.1f" % os.getloadavg()
    except OSError:
        load = "load average n/a"
    return (f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch threads, {load}, {time.strftime('%Y-%m-%d %H:%M')}.")


def write_section(name: str, markdown: str, path: Path = RESULTS) -> None:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    content = path.read_text() if path.exists() else HEADER
    if start in content:
        content = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda m: block, content, flags=re.S)
    else:
        content = content.rstrip() + "\n\n" + block + "\n"
    path.write_text(content)
