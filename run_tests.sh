#!/usr/bin/env bash
# The test suite, on the machine's real PostgreSQL and Redis (127.0.0.1, see tests/envdefaults.py).
# Installs what the tests need: the Python packages and Debian's Chromium for the browser tests.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> Installing Debian's chromium for the end-to-end tests"
    (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) \
      || echo "!! chromium could not be installed; browser tests will be skipped" >&2
  else
    echo "!! /usr/bin/chromium missing and not root: browser tests will be skipped" >&2
  fi
fi
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/piggyback}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/9}
exec .venv/bin/python -m pytest "$@"
