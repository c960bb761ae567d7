"""docs/canvas.md, executed: its examples run against a real worker on SQLite.

The first ```python block of the page is the tasks module (its first line is
`# tasks.py`): it is written to tmp_path/tasks.py and a real `celeriac -A tasks worker`
runs it. Every other ```python block then runs, in the page's order and in one
namespace, in a client process in the same directory. Blocks in other languages
(```console, ```text, ...) are not run. A failure names the block by its line in the page.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers import ROOT

DOC = ROOT / "docs" / "canvas.md"
CLIENT_TIMEOUT = 60.0  # seconds for all the examples together; each get() has its own timeout=10

# Examples that fail today because of a bug in src/ (not in the page). The test still
# fails on them, with this explanation; remove the entry once the bug is fixed.
# Key: a line that appears in the block.
KNOWN_BUGS: dict[str, str] = {}

_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")


@dataclass
class Block:
    line: int  # line number of the first code line in docs/canvas.md
    lang: str
    code: str

    @property
    def title(self) -> str:
        first = next((s for s in self.code.splitlines() if s.strip()), "")
        return f"docs/canvas.md line {self.line}: {first.strip()[:80]}"


def fenced_blocks(text: str) -> list[Block]:
    """Every fenced block of a Markdown page, with its language and first line number."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, lang = opening.groups()
        start = i + 1
        i = start
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        if i == len(lines):
            raise AssertionError(f"docs/canvas.md line {start}: a ``` fence that is never closed")
        body = [line[len(indent):] if line.startswith(indent) else line for line in lines[start:i]]
        blocks.append(Block(start + 1, lang, "\n".join(body) + "\n"))
        i += 1
    return blocks


# Runs in the client process: executes the blocks in one namespace, goes on after a
# failure (so that every broken example is reported), and says which block it is in
# before running it (so that a hang can be pinned on a block).
RUNNER = r"""
import json, sys, traceback
doc, blocks_path, report_path = sys.argv[1:4]
ns = {"__name__": "__main__"}
failures = []
for block in json.load(open(blocks_path)):
    print("BLOCK", block["line"], flush=True)
    # Pad with blank lines so that tracebacks show the line numbers of the page itself.
    code = compile("\n" * (block["line"] - 1) + block["code"], doc, "exec")
    try:
        exec(code, ns)
    except BaseException:
        failures.append({"line": block["line"], "error": traceback.format_exc()})
        print("FAILED", block["line"], flush=True)
        print(f"=== docs/canvas.md line {block['line']}\n{failures[-1]['error']}", file=sys.stderr, flush=True)
    else:
        print("OK", block["line"], flush=True)
json.dump(failures, open(report_path, "w"))
"""


def doc_blocks() -> tuple[Block, list[Block]]:
    blocks = fenced_blocks(DOC.read_text())
    python = [b for b in blocks if b.lang == "python"]
    assert python, "docs/canvas.md has no ```python blocks"
    tasks_module, examples = python[0], python[1:]
    assert tasks_module.code.startswith("# tasks.py\n"), (
        f"{tasks_module.title}: the first ```python block must be the tasks module, starting with '# tasks.py'")
    unknown = sorted({b.lang for b in blocks} - {"python", "console", "bash", "text"})
    assert not unknown, f"docs/canvas.md: blocks with an unexpected language {unknown} (only ```python runs)"
    return tasks_module, examples


def test_parser_finds_every_example() -> None:
    tasks_module, examples = doc_blocks()
    assert "def add(" in tasks_module.code
    assert len(examples) >= 15
    for key in KNOWN_BUGS:
        assert any(key in b.code for b in examples), f"KNOWN_BUGS key {key!r} is in no example of docs/canvas.md"


@pytest.mark.parametrize("broker_kind", ["sqlite"])
def test_canvas_doc_examples(broker_kind: str, app_env: dict[str, str], start_worker: Any,
                             tmp_path: Path) -> None:
    tasks_module, examples = doc_blocks()
    (tmp_path / "tasks.py").write_text(tasks_module.code)
    worker = start_worker("-c", "2", app="tasks")

    blocks_path, report_path = tmp_path / "doc_blocks.json", tmp_path / "doc_report.json"
    blocks_path.write_text(json.dumps([{"line": b.line, "code": b.code} for b in examples]))
    try:
        proc = subprocess.run([sys.executable, "-c", RUNNER, str(DOC), str(blocks_path), str(report_path)],
                              cwd=tmp_path, env=app_env, capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        out, err = (s.decode() if isinstance(s, bytes) else (s or "") for s in (exc.stdout, exc.stderr))
        started = re.findall(r"^BLOCK (\d+)$", out, re.M)
        where = next((b.title for b in examples if started and b.line == int(started[-1])), "before any block")
        raise AssertionError(f"the docs examples did not finish within {CLIENT_TIMEOUT:.0f}s; stuck in {where}\n"
                             f"--- earlier failures (client stderr) ---\n{err or '(none)'}\n"
                             f"--- worker output (last lines) ---\n{_tail(worker.output)}") from None
    if not report_path.exists():
        raise AssertionError(f"the docs example runner crashed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")

    failures = json.loads(report_path.read_text())
    by_line = {b.line: b for b in examples}
    fixed = [key for key in KNOWN_BUGS
             if not any(key in by_line[f["line"]].code for f in failures)]
    if failures or fixed:
        parts = []
        for f in failures:
            block = by_line[f["line"]]
            bug = next((why for key, why in KNOWN_BUGS.items() if key in block.code), None)
            label = f"KNOWN BUG in src/ ({bug})" if bug else "FAILED"
            parts.append(f"=== {label}: {block.title}\n{f['error']}")
        for key in fixed:
            parts.append(f"=== KNOWN_BUGS entry {key!r} now passes: remove it from {Path(__file__).name}")
        raise AssertionError(f"{len(failures)} of {len(examples)} docs/canvas.md example(s) failed\n\n"
                             + "\n".join(parts)
                             + f"\n--- worker output (last lines) ---\n{_tail(worker.output)}")


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])
