#!/usr/bin/env bash
# Install everything PiggyBack needs into ./.venv and ./node_modules (idempotent; safe to re-run).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> Creating the virtual environment .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(sha256sum requirements.txt requirements-dev.txt package.json | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> Installing Python packages (torch is the pinned CPU build)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet torch==2.13.0
  .venv/bin/python -m pip install --quiet -r requirements-dev.txt
  if command -v npm >/dev/null 2>&1; then
    echo "==> Installing pinned front-end assets (Bootstrap, Chart.js) and axe-core (browser accessibility tests) from npm"
    npm ci --no-audit --no-fund --silent
  else
    echo "!! npm not found: pages will lack their stylesheet until 'npm ci' runs" >&2
  fi
  echo "$want" > "$stamp"
fi
