#!/usr/bin/env bash
# Sets up a venv with celeriac and runs the tutorial end to end on the embedded SQLite default.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/python examples/demo.py
