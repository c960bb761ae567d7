"""docs/asyncio.md, executed: its tasks module runs in a real worker, its client script
against it, on every broker; the client's output is what the page's comments say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import ROOT

DOC = ROOT / "docs" / "asyncio.md"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)


def test_asyncio_doc_example(app_env: dict[str, str], start_worker: Any, tmp_path: Path) -> None:
    tasks_code, client_code = python_blocks()
    assert tasks_code.startswith("# tasks.py") and client_code.startswith("# client.py")
    (tmp_path / "tasks.py").write_text(tasks_code)
    (tmp_path / "client.py").write_text(client_code)
    env = dict(app_env, PYTHONPATH=f"{tmp_path}:{app_env.get('PYTHONPATH', '')}")
    start_worker("-c", "2", app="tasks", env=env)
    done = subprocess.run([sys.executable, "client.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "add: 5", "ready at once? False", "later: 2", "by name: 42", "sum of doubles: 9900",
        "group: [1, 2, 3, 4, 5]", "chain: 6", "chord: 12", "failed: no good", "not ready within 0.5 s"]
