#!/usr/bin/env python
"""Check ``# Copied from`` markers, the way transformers' ``utils/check_copies.py`` does.

A line ``# Copied from gpu_worker.models.visualbert.VisualBertAdapter.training_loss`` directly above a
``def``/``class`` says that definition is a deliberate copy of the named one; an optional
``with A->B, C->D`` lists the textual replacements that turn the original into the copy. This script
finds every marker under ``gpu_worker/`` and fails (exit 1, one line per divergence) when a copy no
longer equals its original after the replacements. Also fails when a family module imports another
family's private (underscore) helper.

    python scripts/check_copies.py [--root DIR]
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
import textwrap
from pathlib import Path

MARKER = re.compile(r"^\s*# Copied from (gpu_worker(?:\.\w+)+)(?:\s+with\s+(.+))?\s*$")
FAMILIES = ("baseline", "vilt", "visualbert", "lxmert", "blip", "blip2", "florence2")


def _find(tree: ast.AST, qualname: list[str]):
    """The def/class node at ``qualname`` (e.g. ["VisualBertAdapter", "training_loss"]) in ``tree``."""
    node = tree
    for name in qualname:
        children = [n for n in ast.iter_child_nodes(node)
                    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == name]
        if not children:
            return None
        node = children[0]
    return node


def _source(lines: list[str], node) -> str:
    start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    body = [ln for ln in lines[start - 1:node.end_lineno] if not MARKER.match(ln)]
    return textwrap.dedent("".join(body)).rstrip() + "\n"


def _resolve(root: Path, dotted: str):
    """(module file, qualname parts) of a dotted name: the longest module prefix that is a file."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        path = root.joinpath(*parts[:cut]).with_suffix(".py")
        if path.is_file():
            return path, parts[cut:]
    return None, []


def _replacements(spec: str | None) -> list[tuple[str, str]]:
    if not spec:
        return []
    out = []
    for pair in spec.split(","):
        if "->" not in pair:
            raise ValueError(f"bad replacement {pair.strip()!r} (expected A->B)")
        a, b = pair.split("->", 1)
        out.append((a.strip(), b.strip()))
    return out


def check_file(root: Path, path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    tree = ast.parse(text)
    defs = {n.lineno: n for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    problems = []
    for i, line in enumerate(lines, start=1):
        m = MARKER.match(line)
        if not m:
            continue
        where = f"{path.relative_to(root)}:{i}"
        node = defs.get(i + 1)
        if node is None:
            problems.append(f"{where}: '# Copied from' must stand directly above a def or class")
            continue
        src_path, qual = _resolve(root, m.group(1))
        original = _find(ast.parse(src_path.read_text(encoding="utf-8")), qual) if src_path else None
        if original is None:
            problems.append(f"{where}: {m.group(1)} does not exist")
            continue
        try:
            expected = _source(src_path.read_text(encoding="utf-8").splitlines(keepends=True), original)
            for a, b in _replacements(m.group(2)):
                expected = expected.replace(a, b)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if _source(lines, node) != expected:
            problems.append(f"{where}: {node.name} differs from {m.group(1)}"
                            + (f" (with {m.group(2)})" if m.group(2) else ""))
    problems.extend(_private_family_imports(root, path, tree))
    return problems


def _private_family_imports(root: Path, path: Path, tree: ast.AST) -> list[str]:
    own = path.stem
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[:2] == ["gpu_worker", "models"] and len(parts) == 3 and parts[2] in FAMILIES \
                    and parts[2] != own and own in FAMILIES:
                for alias in node.names:
                    if alias.name.startswith("_"):
                        out.append(f"{path.relative_to(root)}:{node.lineno}: imports {alias.name} from the "
                                   f"{parts[2]} family (a private helper of another family)")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parent.parent))
    args = parser.parse_args(argv)
    root = Path(args.root)
    problems, copies = [], 0
    for path in sorted((root / "gpu_worker").rglob("*.py")):
        copies += sum(1 for ln in path.read_text(encoding="utf-8").splitlines() if MARKER.match(ln))
        problems.extend(check_file(root, path))
    for p in problems:
        print(p)
    print(f"check_copies: {copies} marked copies, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
