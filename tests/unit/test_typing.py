"""`@app.task` keeps the function's signature for type checkers (checked with mypy)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

TYPING = Path(__file__).resolve().parent.parent / "typing"


def _mypy(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(path)],
                          capture_output=True, text=True, timeout=240)


@pytest.mark.timeout(300)
def test_typed_example_is_clean() -> None:
    result = _mypy(TYPING / "typed_ok.py")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(300)
def test_misuse_is_reported_on_every_marked_line() -> None:
    source = (TYPING / "typed_errors.py").read_text().splitlines()
    marked = {i + 1 for i, line in enumerate(source) if line.rstrip().endswith("# E")}
    result = _mypy(TYPING / "typed_errors.py")
    reported = {int(m.group(1)) for m in re.finditer(r"typed_errors\.py:(\d+): error", result.stdout)}
    assert marked, "the example lost its markers"
    assert reported == marked, result.stdout
