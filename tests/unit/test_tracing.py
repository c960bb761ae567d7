"""Tracing with OpenTelemetry (celeriac.contrib.opentelemetry) on an in-process worker:
span names, attributes and the parent/child shape of calls, workflows, retries and failures.
The same shapes are checked on real worker processes in tests/integration/test_tracing_worker.py."""

from __future__ import annotations

import importlib
import sys
import uuid
from typing import Any, Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from celeriac import Celeriac, Task, chain, chord, group, signals
from celeriac.contrib.opentelemetry import CeleriacInstrumentor
from celeriac.testing import start_worker
from helpers import wait_until
from otel_app import span_record
from otel_shapes import (Spans, assert_child, check_call, check_chain, check_chord, check_failure, check_group,
                         check_retry)

NAME = f"otel-unit-{uuid.uuid4().hex}"
app = Celeriac("otel_unit", broker=f"memory://{NAME}", backend=f"memory://{NAME}")
app.conf.worker_heartbeat_interval = 0.5


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def tsum(values: list[int]) -> int:
    return sum(values)


@app.task
def boom(message: str) -> None:
    raise ValueError(message)


@app.task(bind=True, max_retries=3)
def retry_once(self: Task[Any, Any], value: int) -> int:
    if self.request.retries == 0:
        raise self.retry(exc=OSError("first attempt fails"), countdown=0.05)
    return value


@app.task(bind=True)
def spawns(self: Task[Any, Any], x: int) -> str:
    return str(add.delay(x, 1).id)


@app.task
def on_error(failed_id: str) -> str:
    return failed_id


@app.task(bind=True)
def replacer(self: Task[Any, Any], x: int) -> None:
    self.replace(add.s(x, 100))


@app.task
async def aadd(x: int, y: int) -> int:
    return x + y


@app.task(bind=True)
def traceparent(self: Task[Any, Any]) -> Any:
    return (self.request.headers or {}).get("traceparent")


@pytest.fixture(autouse=True)
def _no_url_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELERIAC_BROKER_URL", raising=False)
    monkeypatch.delenv("CELERIAC_RESULT_BACKEND", raising=False)


class Traced:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("test")
        self.instrumentor = CeleriacInstrumentor()

    def spans(self) -> Spans:
        return Spans([span_record(s) for s in self.exporter.get_finished_spans()])

    def wait(self, *task_ids: str, publishes: int = 1, runs: int = 1) -> Spans:
        def complete() -> Spans | None:
            spans = self.spans()
            return spans if all(spans.has(i, publishes, runs) for i in task_ids) else None
        return wait_until(complete, 10, message=f"spans of {task_ids}")  # type: ignore[no-any-return]

    def client_span(self) -> Record:
        (found,) = [r for r in self.spans().records if r["name"] == "client"]
        return found


Record = dict[str, Any]


@pytest.fixture
def traced() -> Iterator[Traced]:
    t = Traced()
    t.instrumentor.instrument(tracer_provider=t.provider)
    yield t
    t.instrumentor.uninstrument()


def test_delay_publish_and_run_share_a_trace(traced: Traced) -> None:
    with start_worker(app):
        result = add.delay(2, 3)
        assert result.get(timeout=10) == 5
        spans = traced.wait(result.id)
    publish, run = check_call(spans, result.id, add.name)
    assert publish["parent_id"] is None  # no span active in the client: the publish starts the trace
    assert publish["attributes"]["messaging.message.id"] == result.id
    assert run["attributes"]["celery.hostname"].startswith("testworker@")


def test_message_carries_the_publish_span_as_w3c_traceparent(traced: Traced) -> None:
    with start_worker(app):
        result = traceparent.delay()
        header = result.get(timeout=10)
        spans = traced.wait(result.id)
    publish = spans.publish(result.id)
    version, trace_id, span_id, flags = header.split("-")
    assert (version, trace_id, span_id) == ("00", publish["trace_id"], publish["span_id"])
    assert int(flags, 16) & 1  # sampled


def test_client_span_is_the_parent_of_the_publish(traced: Traced) -> None:
    with start_worker(app):
        with traced.tracer.start_as_current_span("client"):
            result = add.delay(1, 1)
        result.get(timeout=10)
        spans = traced.wait(result.id)
    check_call(spans, result.id, add.name, parent=traced.client_span())


def test_a_task_that_sends_a_task_is_its_parent(traced: Traced) -> None:
    with start_worker(app):
        result = spawns.delay(4)
        child_id = result.get(timeout=10)
        assert app.AsyncResult(child_id).get(timeout=10) == 5
        spans = traced.wait(result.id, child_id)
    _, run = check_call(spans, result.id, spawns.name)
    check_call(spans, child_id, add.name, parent=run)


def test_chain_each_step_is_a_child_of_the_step_that_published_it(traced: Traced) -> None:
    with start_worker(app):
        with traced.tracer.start_as_current_span("client"):
            result = chain(add.s(1, 1), add.s(2), add.s(3)).apply_async()
        assert result.get(timeout=10) == 7
        ids = [result.parent.parent.id, result.parent.id, result.id]
        spans = traced.wait(*ids)
    check_chain(spans, ids, add.name, traced.client_span())


def test_async_tasks_in_a_chain_are_traced_like_sync_ones(traced: Traced) -> None:
    with start_worker(app):
        with traced.tracer.start_as_current_span("client"):
            result = chain(aadd.s(1, 1), aadd.s(2), add.s(3)).apply_async()
        assert result.get(timeout=10) == 7
        ids = [result.parent.parent.id, result.parent.id, result.id]
        spans = traced.wait(*ids)
    client = traced.client_span()
    _, first = check_call(spans, ids[0], aadd.name, client)
    _, second = check_call(spans, ids[1], aadd.name, first)
    check_call(spans, ids[2], add.name, second)


def test_group_members_are_children_of_the_client(traced: Traced) -> None:
    with start_worker(app, concurrency=2):
        with traced.tracer.start_as_current_span("client"):
            result = group(add.s(i, i) for i in range(3)).apply_async()
        assert result.get(timeout=10) == [0, 2, 4]
        ids = [r.id for r in result.results]
        spans = traced.wait(*ids)
    check_group(spans, ids, add.name, traced.client_span())


def test_chord_body_is_a_child_of_the_header_run_that_completed_it(traced: Traced) -> None:
    with start_worker(app, concurrency=2):
        with traced.tracer.start_as_current_span("client"):
            result = chord([add.s(i, i) for i in range(3)], tsum.s()).apply_async()
        assert result.get(timeout=10) == 6
        header_ids = [r.id for r in result.parent.results]
        spans = traced.wait(result.id, *header_ids)
    check_chord(spans, header_ids, result.id, add.name, tsum.name, traced.client_span())


def test_link_callback_is_a_child_of_the_run_that_sent_it(traced: Traced) -> None:
    with start_worker(app):
        callback = add.s(10)
        callback_id = callback.freeze().id
        result = add.apply_async((1, 2), link=callback)
        assert result.get(timeout=10) == 3
        assert app.AsyncResult(callback_id).get(timeout=10) == 13
        spans = traced.wait(result.id, callback_id)
    _, run = check_call(spans, result.id, add.name)
    check_call(spans, callback_id, add.name, parent=run)


def test_error_callback_is_a_child_of_the_failed_run(traced: Traced) -> None:
    with start_worker(app):
        errback = on_error.s()
        errback_id = errback.freeze().id
        result = boom.apply_async(("no good",), link_error=errback)
        with pytest.raises(ValueError):
            result.get(timeout=10)
        assert app.AsyncResult(errback_id).get(timeout=10) == result.id
        spans = traced.wait(result.id, errback_id)
    failed_run = spans.run(result.id)
    check_call(spans, errback_id, on_error.name, parent=failed_run)
    assert app.AsyncResult(errback_id).parent.id == result.id


def test_replacement_is_a_child_of_the_run_it_replaces(traced: Traced) -> None:
    with start_worker(app):
        result = replacer.delay(5)
        assert result.get(timeout=10) == 105
        spans = traced.wait(result.id, publishes=2, runs=2)
    first_run = spans.run(result.id)
    assert first_run["name"] == f"run/{replacer.name}" and first_run["attributes"]["celery.state"] == "IGNORED"
    replacement_publish, replacement_run = spans.publish(result.id, 1), spans.run(result.id, 1)
    assert replacement_run["name"] == f"run/{add.name}"
    assert_child(replacement_publish, first_run)
    assert_child(replacement_run, replacement_publish)


def test_retry_run_is_a_child_of_the_retry_published_by_the_failed_run(traced: Traced) -> None:
    with start_worker(app):
        result = retry_once.delay(7)
        assert result.get(timeout=10) == 7
        spans = traced.wait(result.id, publishes=2, runs=2)
    check_retry(spans, result.id, retry_once.name)


def test_failure_is_recorded_on_the_run_span(traced: Traced) -> None:
    with start_worker(app):
        result = boom.delay("no good")
        with pytest.raises(ValueError):
            result.get(timeout=10)
        spans = traced.wait(result.id)
    check_failure(spans, result.id, boom.name, "no good")


def test_apply_runs_inside_the_callers_span(traced: Traced) -> None:
    with traced.tracer.start_as_current_span("client"):
        assert add.apply((1, 2)).get() == 3
    (run,) = [r for r in traced.spans().records if r["kind"] == "CONSUMER"]
    assert run["name"] == f"run/{add.name}"
    assert_child(run, traced.client_span())


def test_context_from_an_uninstrumented_publisher_is_continued(traced: Traced) -> None:
    """The worker continues any W3C traceparent in the message headers, which is where a Celery
    client instrumented with opentelemetry-instrumentation-celery puts it."""
    traced.instrumentor.uninstrument()
    remote = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    result = add.apply_async((1, 2), headers={"traceparent": remote})
    traced.instrumentor.instrument(tracer_provider=traced.provider)
    with start_worker(app):
        assert result.get(timeout=10) == 3
        run = wait_until(lambda: traced.spans().of(result.id, "CONSUMER"), 10, message="run span")[0]
    assert run["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert run["parent_id"] == "b7ad6b7169203331"
    assert traced.spans().of(result.id, "PRODUCER") == []


def test_every_publish_path_sends_before_and_after_task_publish_once() -> None:
    """What tracing hangs on: a client's delay, a group, a chain step and a chord body sent by the
    worker, and a retry each send before_task_publish and after_task_publish exactly once."""
    seen: dict[str, list[str]] = {"before": [], "after": []}

    # The test worker's own start-up ping (celery.ping) is not one of the calls below.
    def before(headers: dict[str, Any], **_: Any) -> None:
        if headers["task"] != "celery.ping":
            seen["before"].append(headers["id"])

    def after(headers: dict[str, Any], **_: Any) -> None:
        if headers["task"] != "celery.ping":
            seen["after"].append(headers["id"])

    signals.before_task_publish.connect(before)
    signals.after_task_publish.connect(after)
    try:
        with start_worker(app):
            single = add.delay(1, 1)
            chained = chain(add.s(1, 1), add.s(2)).apply_async()
            grouped = group(add.s(i, i) for i in range(2)).apply_async()
            chorded = chord([add.s(1, 1), add.s(2, 2)], tsum.s()).apply_async()
            retried = retry_once.delay(3)
            assert [r.get(timeout=10) for r in (single, chained, grouped, chorded, retried)] == [2, 4, [0, 2], 6, 3]
            expected = sorted([single.id, chained.parent.id, chained.id, *(r.id for r in grouped.results),
                               *(r.id for r in chorded.parent.results), chorded.id, retried.id, retried.id])
            wait_until(lambda: len(seen["after"]) >= len(expected), 10, message="after_task_publish")
    finally:
        signals.before_task_publish.disconnect(before)
        signals.after_task_publish.disconnect(after)
    assert sorted(seen["before"]) == expected
    assert sorted(seen["after"]) == expected


def test_uninstrument_disconnects_everything_and_sends_plain_messages() -> None:
    t = Traced()
    before = {name: len(getattr(signals, name).receivers) for name in ("before_task_publish", "task_prerun")}
    t.instrumentor.instrument(tracer_provider=t.provider)
    assert t.instrumentor.is_instrumented
    CeleriacInstrumentor().instrument(tracer_provider=t.provider)  # a second instrumentor changes nothing
    assert len(signals.task_prerun.receivers) == before["task_prerun"] + 1
    t.instrumentor.uninstrument()
    assert not t.instrumentor.is_instrumented
    assert {name: len(getattr(signals, name).receivers) for name in before} == before
    with start_worker(app):
        result = traceparent.delay()
        assert result.get(timeout=10) is None  # nothing injected
    assert t.exporter.get_finished_spans() == ()


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "celeriac.contrib.opentelemetry")
    with pytest.raises(ImportError) as caught:
        importlib.import_module("celeriac.contrib.opentelemetry")
    assert str(caught.value) == "celeriac.contrib.opentelemetry needs OpenTelemetry: pip install 'celeriac[otel]'"
