"""Copy the latest benchmark tables (bench/RESULTS*.md) into the README's performance section.

Usage: python bench/update_readme.py   (run after the benchmarks; each writes its RESULTS file)
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
ORDER = ["RESULTS.md", "RESULTS-vilt.md", "RESULTS-cleaning.md", "RESULTS-serving.md", "RESULTS-load.md"]


def main() -> None:
    files = sorted((ROOT / "bench").glob("RESULTS*.md"), key=lambda p: (ORDER.index(p.name) if p.name in ORDER else 99, p.name))
    parts = []
    for path in files:
        text = path.read_text().strip()
        text = re.sub(r"^# ", "### ", text, flags=re.M)  # demote headings under the README's section
        parts.append(f"<sub>from `bench/{path.name}`</sub>\n\n{text}")
    block = f"{START}\n" + "\n\n".join(parts) + f"\n{END}"
    readme = ROOT / "README.md"
    content = readme.read_text()
    if START in content:
        content = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda m: block, content, flags=re.S)
    else:
        content += f"\n## Performance\n\nMeasured on a 2-core CPU machine without a GPU; regenerate with the benchmarks in `bench/` and `python bench/update_readme.py`.\n\n{block}\n"
    readme.write_text(content)
    print(f"README performance section updated from {len(files)} result file(s).")


if __name__ == "__main__":
    main()
