"""Tracing across processes: a traced client and a real `celeriac worker` (its spans written
to a file by otel_app) share one trace per call, with the shapes of tests/unit/test_tracing.py,
on SQLite, Redis and RabbitMQ."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from celeriac import chain, chord, group
from celeriac.contrib.opentelemetry import CeleriacInstrumentor
from celeriac.exceptions import TimeLimitExceeded
from helpers import wait_until
from otel_app import span_record
from otel_shapes import Spans, check_call, check_chain, check_chord, check_failure, check_group, check_retry


class CrossProcess:
    def __init__(self, spans_file: Path) -> None:
        self.spans_file = spans_file
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("test")

    def spans(self) -> Spans:
        client = [span_record(s) for s in self.exporter.get_finished_spans()]
        worker = [json.loads(line) for line in self.spans_file.read_text().splitlines()] \
            if self.spans_file.exists() else []
        return Spans(client + worker)

    def wait(self, *task_ids: str, publishes: int = 1, runs: int = 1) -> Spans:
        def complete() -> Spans | None:
            spans = self.spans()
            return spans if all(spans.has(i, publishes, runs) for i in task_ids) else None
        return wait_until(complete, 20, message=f"spans of {task_ids}")  # type: ignore[no-any-return]

    def client_span(self) -> dict[str, Any]:
        (found,) = [r for r in self.spans().records if r["name"] == "client"]
        return found


@pytest.fixture
def otel(app_env: dict[str, str], tmp_path: Path, start_worker: Any) -> Iterator[tuple[Any, CrossProcess]]:
    import otel_app
    otel_app.app._reset_connections()
    traced = CrossProcess(tmp_path / "worker-spans.jsonl")
    instrumentor = CeleriacInstrumentor()
    instrumentor.instrument(tracer_provider=traced.provider)
    start_worker("-c", "2", app="otel_app", env={**app_env, "OTEL_TEST_SPANS": str(traced.spans_file)})
    yield otel_app, traced
    instrumentor.uninstrument()
    otel_app.app._reset_connections()


def test_calls_retries_and_failures_are_traced_across_processes(otel: tuple[Any, CrossProcess]) -> None:
    tasks, traced = otel
    with traced.tracer.start_as_current_span("client"):
        called = tasks.add.delay(2, 3)
    spawner = tasks.spawns.delay(4)
    retried = tasks.retry_once.delay(7)
    failed = tasks.boom.delay("no good")
    assert called.get(timeout=20) == 5
    child_id = spawner.get(timeout=20)
    assert retried.get(timeout=20) == 7
    with pytest.raises(ValueError):
        failed.get(timeout=20)
    assert tasks.app.AsyncResult(child_id).get(timeout=20) == 5
    traced.wait(called.id, spawner.id, child_id, failed.id)
    spans = traced.wait(retried.id, publishes=2, runs=2)

    publish, run = check_call(spans, called.id, tasks.add.name, parent=traced.client_span())
    assert publish["pid"] != run["pid"]  # two processes, one trace
    _, spawner_run = check_call(spans, spawner.id, tasks.spawns.name)
    check_call(spans, child_id, tasks.add.name, parent=spawner_run)
    check_retry(spans, retried.id, tasks.retry_once.name)
    check_failure(spans, failed.id, tasks.boom.name, "no good")


def test_a_task_ended_by_its_hard_time_limit_has_a_failed_run_span(otel: tuple[Any, CrossProcess]) -> None:
    """The watchdog thread records the outcome and the pool process ends: the span is exported first."""
    tasks, traced = otel
    ended = tasks.sleeps.apply_async((30,), time_limit=1)
    with pytest.raises(TimeLimitExceeded):
        ended.get(timeout=20)
    spans = traced.wait(ended.id)
    _, run = check_call(spans, ended.id, tasks.sleeps.name, state="FAILURE")
    assert run["status"] == "ERROR" and run["description"].startswith("TimeLimitExceeded: ")
    after = tasks.add.delay(1, 1)  # the worker serves on, traced
    assert after.get(timeout=20) == 2
    check_call(traced.wait(after.id), after.id, tasks.add.name)
    assert traced.spans().of(ended.id, "CONSUMER") == [run]


def test_workflows_are_traced_step_by_step(otel: tuple[Any, CrossProcess]) -> None:
    tasks, traced = otel
    add, tsum = tasks.add, tasks.tsum
    with traced.tracer.start_as_current_span("client"):
        chained = chain(add.s(1, 1), add.s(2), add.s(3)).apply_async()
        grouped = group(add.s(i, i) for i in range(3)).apply_async()
        chorded = chord([add.s(i, 10) for i in range(3)], tsum.s()).apply_async()
    assert chained.get(timeout=20) == 7
    assert grouped.get(timeout=20) == [0, 2, 4]
    assert chorded.get(timeout=20) == 33
    chain_ids = [chained.parent.parent.id, chained.parent.id, chained.id]
    group_ids = [r.id for r in grouped.results]
    header_ids = [r.id for r in chorded.parent.results]
    spans = traced.wait(*chain_ids, *group_ids, *header_ids, chorded.id)

    client = traced.client_span()
    check_chain(spans, chain_ids, add.name, client)
    check_group(spans, group_ids, add.name, client)
    check_chord(spans, header_ids, chorded.id, add.name, tsum.name, client)
    worker_publishes = [spans.publish(i) for i in chain_ids[1:] + [chorded.id]]
    assert all(p["pid"] != client["pid"] for p in worker_publishes)  # sent by the worker, still in the trace
