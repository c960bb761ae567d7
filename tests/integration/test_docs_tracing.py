"""docs/tracing.md, executed: its tasks module runs in a real worker, its client script in a
second process, and the spans both print (ConsoleSpanExporter) form the trace the page shows."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import ROOT, wait_until

DOC = ROOT / "docs" / "tracing.md"


def python_block(first_line: str) -> str:
    blocks = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), re.M | re.S)
    found = [b for b in blocks if b.startswith(first_line + "\n")]
    assert len(found) == 1, f"docs/tracing.md needs one ```python block starting with {first_line!r}"
    return str(found[0])


def printed_spans(output: str) -> list[dict[str, Any]]:
    """The spans ConsoleSpanExporter printed (indented JSON objects) among other output."""
    decoder, spans = json.JSONDecoder(), []
    for match in re.finditer(r"^\{$", output, re.M):
        span, _ = decoder.raw_decode(output, match.start())
        spans.append(span)
    return spans


@pytest.mark.parametrize("broker_kind", ["sqlite"])
def test_tracing_doc_example(broker_kind: str, app_env: dict[str, str], start_worker: Any, tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text(python_block("# tasks.py"))
    (tmp_path / "client.py").write_text(python_block("# client.py"))
    worker = start_worker(app="tasks")
    client = subprocess.run([sys.executable, "client.py"], cwd=tmp_path, env=app_env, capture_output=True,
                            text=True, timeout=60)
    assert client.returncode == 0, client.stderr
    assert "result: 8" in client.stdout
    client_spans = {s["name"]: s for s in printed_spans(client.stdout)}
    assert set(client_spans) == {"checkout", "apply_async/tasks.add"}

    def worker_spans() -> list[dict[str, Any]] | None:
        spans = printed_spans(worker.output)
        return spans if len(spans) >= 3 else None

    first_run, next_publish, second_run = sorted(wait_until(worker_spans, 20, message="the worker's spans"),
                                                 key=lambda s: s["start_time"])
    assert (first_run["name"], next_publish["name"], second_run["name"]) == (
        "run/tasks.add", "apply_async/tasks.add", "run/tasks.add")
    assert (first_run["kind"], next_publish["kind"]) == ("SpanKind.CONSUMER", "SpanKind.PRODUCER")
    chain = [client_spans["checkout"], client_spans["apply_async/tasks.add"], first_run, next_publish, second_run]
    assert len({s["context"]["trace_id"] for s in chain}) == 1
    for parent, child in itertools.pairwise(chain):
        assert child["parent_id"] == parent["context"]["span_id"], f"{child['name']} is not a child of {parent['name']}"
    assert first_run["attributes"]["celery.state"] == "SUCCESS"
