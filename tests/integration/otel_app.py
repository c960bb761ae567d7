"""Tasks for the tracing tests (test_tracing_worker.py); the worker imports this module with -A otel_app.

With OTEL_TEST_SPANS=<file> in its environment, the process (and the pool processes forked
from it) traces with CeleriacInstrumentor and appends every finished span to that file as one
JSON line, which the test reads back.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Sequence

from celeriac import Celeriac, Task

app = Celeriac("otel_app")
app.conf.worker_heartbeat_interval = 0.5
app.conf.worker_lease_timeout = 3.0


def span_record(span: Any) -> dict[str, Any]:
    """A finished SDK span as plain data: what the shape assertions look at."""
    ctx, parent = span.context, span.parent
    return {
        "name": span.name, "kind": span.kind.name, "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}", "parent_id": f"{parent.span_id:016x}" if parent else None,
        "attributes": dict(span.attributes or {}), "status": span.status.status_code.name,
        "description": span.status.description, "start": span.start_time, "pid": os.getpid(),
        "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events],
    }


def _install_file_exporter(path: str) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    from celeriac.contrib.opentelemetry import CeleriacInstrumentor

    class JsonLinesExporter(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            data = "".join(json.dumps(span_record(s)) + "\n" for s in spans)
            # One write to a file opened for appending: pool processes never interleave a line.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data.encode())
            finally:
                os.close(fd)
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter()))
    CeleriacInstrumentor().instrument(tracer_provider=provider)


if os.environ.get("OTEL_TEST_SPANS"):
    _install_file_exporter(os.environ["OTEL_TEST_SPANS"])


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
        raise self.retry(exc=OSError("first attempt fails"), countdown=0.1)
    return value


@app.task(bind=True)
def spawns(self: Task[Any, Any], x: int) -> str:
    """Sends a task from inside its run: that publish is a child of this run's span."""
    return str(add.delay(x, 1).id)


@app.task
def sleeps(seconds: float) -> None:
    time.sleep(seconds)
