"""Generate the README's performance table from the benchmark results in bench/RESULTS*.md.

Each benchmark writes its full tables into a RESULTS file; this script picks the headline rows out of
them (by their row labels) and writes one summary table between the README's markers, with a link to
each full result. A row whose benchmark has not run says so instead of inventing a number.

Usage: python bench/update_readme.py
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"

# (what, result file, row label regex, which cell(s) to show, goal)
ROWS = [
    ("easy-VQA test accuracy, default model + defaults", "RESULTS.md", r"test official VQA accuracy", [1], "≥ 99.8 %"),
    ("easy-VQA training time (train_model)", "RESULTS.md", r"training time \(train_model wall\)", [1], "≤ 5 min"),
    ("pointing game (top region inside the shape)", "RESULTS.md", r"pointing game", [1], "≥ 90 %"),
    ("default run started from the UI: start → evaluation page", "RESULTS-ui.md", r"default run from the UI", [1, 2], ""),
    ("batch evaluation of the test split from the UI", "RESULTS-ui.md", r"batch evaluation from the UI", [1, 2], ""),
    ("upload + cleaning of the train split from the UI", "RESULTS-ui.md", r"upload \+ cleaning", [1], ""),
    ("newcomer: demo project trained with the defaults (quick start → Train → evaluation page)", "RESULTS-newcomer.md",
     r"first run with the defaults", [1, 2], "≥ 99 % in ≤ 3 min"),
    ("training loop, ours / HF Trainer with the same batches and per-image de-duplication (baseline)", "RESULTS.md",
     r"\*\*ratio\*\* ours / Trainer, same de-duplication", [1], "≥ 1.5×"),
    ("per-image de-duplication gain in training, measured inside the Trainer (baseline)", "RESULTS.md",
     r"^de-duplication gain \(Trainer grouped", [1], ""),
    ("training loop, ours / HF Trainer on the same pre-processed tensors (tiny ViLT)", "RESULTS-vilt.md",
     r"^ours / Trainer, same tensors", [1], ""),
    ("pre-processing cache gain in training, inside the Trainer (tiny ViLT)", "RESULTS-vilt.md",
     r"^pre-processing cache gain", [1], ""),
    ("batch prediction / one question per forward with the same image cache (baseline)", "RESULTS.md",
     r"\*\*ratio batched \(\+regions\) / one-by-one with the same image cache", [1], "≥ 10×"),
    ("image cache gain, one question at a time (baseline)", "RESULTS.md", r"^image cache gain", [1], ""),
    ("cleaning 2,000 640×480 JPEGs: check processes · thumbnails · photos/s · CPU ms per photo in the caller", "RESULTS-cleaning.md", r"^\| (\*\*)?[12][^|]*\| (\*\*)?(no|yes)", [0, 1, 3, 5], "≥ 250 photos/s on 2 idle cores"),
    ("VQAv2-shaped dataset through tus (interrupted + resumed), cleaning, then training on it", "RESULTS-scale.md", r"^photos / questions|tus upload|cleaning \(worker\)|cleaning phases|peak RSS", [1], "peak RSS ≤ 800 MB"),
    ("single prediction in-process, model call (cached)", "RESULTS-serving.md", r"of which model call", [1], ""),
    ("predict under load: 1,000 requests, 20 concurrent (gunicorn 4×1)", "RESULTS-load.md", r"^\| predict \|", [2, 3, 4, 5, 6], "0 errors, p99 ≤ 200 ms"),
]


def table_rows(text: str):
    for line in text.splitlines():
        if line.startswith("|") and not re.match(r"^\|[-:| ]+\|$", line):
            yield [c.strip() for c in line.strip().strip("|").split("|")]


def pick(file: str, label: str, cells: list[int]) -> str | None:
    """The ``cells`` of the first table row matching ``label``; for the cleaning and scale files, of every
    matching row of the FIRST table that has one (the newest section comes first)."""
    path = BENCH / file
    if not path.exists():
        return None
    found = []
    for raw in path.read_text().splitlines():
        rows = list(table_rows(raw))
        cols = rows[0] if rows else None
        line = "| " + " | ".join(cols) + " |" if cols else ""
        if cols and (re.search(label, cols[0]) or re.search(label, line)):
            found.append(" · ".join(cols[i] for i in cells if i < len(cols)))
            if file not in ("RESULTS-cleaning.md", "RESULTS-scale.md"):
                break
        elif found and not raw.startswith("|"):
            break
    return "; ".join(found) if found else None


def main() -> None:
    lines = [
        START,
        "| what | measured | goal | full result |",
        "|---|---|---|---|",
    ]
    for what, file, label, cells, goal in ROWS:
        value = pick(file, label, cells)
        if file == "RESULTS-load.md" and value:
            value = "errors · req/s · p50 · p90 · p99 ms: " + value.replace("**", "")
        lines.append(f"| {what} | {value or 'not measured yet'} | {goal} | [`bench/{file}`](bench/{file}) |")
    lines.append(END)
    block = "\n".join(lines)
    readme = ROOT / "README.md"
    content = readme.read_text()
    if START in content:
        content = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda m: block, content, flags=re.S)
    else:
        content = content.rstrip() + (
            "\n\n## Performance\n\nMeasured on this project's 2-core CPU machine without a GPU, with other work "
            "sharing the cores at times (each result file records the load). Regenerate with the scripts in "
            "`bench/` and `python bench/update_readme.py`.\n\n" + block + "\n")
    readme.write_text(content)
    print(block)


if __name__ == "__main__":
    main()
