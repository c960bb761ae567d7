#!/usr/bin/env bash
# celeriac vs Celery side by side on one fresh local Redis; see benchmarks/README.md.
# Usage: bash benchmarks/compare_celery.sh [--n 10000] [--lat 500] [--rounds 2] [--out FILE] [--skip-setup]
#        bash benchmarks/compare_celery.sh --transport amqp [...]   (private RabbitMQ node as broker, Redis for results)
#   Sets up/updates benchmarks/.venv-celery (pip install -U "celery[redis]" hiredis) unless --skip-setup,
#   runs celeriac from the project venv (.venv), prints the markdown table and writes it to --out
#   (default /tmp/celeriac-vs-celery-<time>.md).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# The driver is stdlib-only: the system python3, else the project venv's python.
PY=${PYTHON:-$(command -v python3 || echo "$HERE/../.venv/bin/python")}
exec "$PY" "$HERE/compare_celery.py" "$@"
