#!/usr/bin/env bash
# Sets up everything the test suite needs and runs it: ruff and mypy on src/, then pytest.
# The suite starts its own redis-server / RabbitMQ nodes / PostgreSQL clusters on free loopback ports; this script
# installs the Debian packages (and tmux, for the monitor's test) when they are missing and it
# runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)  # redis-cli makes the test Redis Cluster
{ command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ]; } || missing+=(rabbitmq-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)  # a private server per test session
command -v tmux >/dev/null 2>&1 || missing+=(tmux)  # the live monitor's test reads a real terminal screen
[ -x /usr/bin/chromium ] || missing+=(chromium)  # the dashboard's browser tests (Playwright drives it; never a download)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} from Debian's packages"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "note: ${missing[*]} not installed (run as root to install); tests needing them will skip, or fail with CI=true"
  fi
fi

.venv/bin/ruff check src
.venv/bin/mypy
# Four xdist workers: the long waiting tests (marked slow) on one, the rest in three groups by module (tests/conftest.py).
exec .venv/bin/pytest -n 4 --dist loadgroup "$@"
