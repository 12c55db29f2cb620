#!/usr/bin/env bash
# Quick start: install into .venv, then run the whole platform (web + worker + embedded Redis/SQLite
# unless DATABASE_URL / REDIS_URL are set), with a demo login. Ctrl+C stops everything.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
exec .venv/bin/python manage.py up "$@"
