"""OpenTelemetry tracing: a PRODUCER span per published task, a CONSUMER span per run.

    from celeriac.contrib.opentelemetry import CeleriacInstrumentor
    CeleriacInstrumentor().instrument()          # after setting up a TracerProvider

The span names (`apply_async/<task>`, `run/<task>`) and attribute names (`celery.action`,
`celery.task_name`, `celery.state`, `messaging.message.id`, `messaging.destination`, ...) are
the ones opentelemetry-instrumentation-celery uses, so dashboards built for Celery keep
working. The trace context travels in the message headers as W3C `traceparent` (and
`tracestate`, baggage) through OpenTelemetry's configured propagator, where Celery's
instrumentation puts it too.

Everything hangs on celeriac's signals, whose senders skip all work while nothing is
connected: an app that never calls `instrument()` pays nothing.

Who is the parent of a publish: the span active where the message is built (a client's
own span, or the run span of the task that calls `delay()`). A worker builds some messages
after the task's run span has closed: the next step of a chain, callbacks, a retry, a
chord body sent by the header that completed it. For those the worker process remembers
the span of each task it ran recently, and the message's `parent_id` (or, for a retry, its
own id) names the task whose span becomes the parent; so every step of a workflow is a
child of the step that published it, and each retry's run is a grandchild of the failed run.
"""

from __future__ import annotations

import contextvars
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
except ImportError:  # pragma: no cover - exercised by test_missing_extra with the package hidden
    raise ImportError("celeriac.contrib.opentelemetry needs OpenTelemetry: pip install 'celeriac[otel]'") from None

from .. import __version__, signals, states

# Attribute names as opentelemetry-instrumentation-celery writes them.
ACTION = "celery.action"
TASK_NAME = "celery.task_name"
STATE = "celery.state"
RETRY_REASON = "celery.retry.reason"
RETRIES = "celery.retries"
HOSTNAME = "celery.hostname"
ETA = "celery.eta"
EXPIRES = "celery.expires"
PRIORITY = "celery.priority"
DELIVERY_INFO = "celery.delivery_info"
MESSAGE_ID = "messaging.message.id"
DESTINATION = "messaging.destination"
CONVERSATION_ID = "messaging.conversation_id"

# How many finished runs a process remembers as parents for what it sends after them: a
# worker sends a task's follow-ups within one batch flush, so a few batches' worth is plenty.
REMEMBERED_RUNS = 2048
# Publish spans wait here from building a message to its publish; one built but never sent
# (a beat tick another beat replica fired first) is ended when this many are waiting.
MAX_PENDING_PUBLISHES = 10_000

_SIGNALS = ("before_task_publish", "after_task_publish", "task_prerun", "task_postrun",
            "task_failure", "task_retry")


@dataclass(slots=True)
class _Run:
    span: trace.Span
    token: contextvars.Token[otel_context.Context]
    thread: int
    request: Any


class CeleriacInstrumentor:
    """Traces every publish and every run of celeriac tasks in this process.

    Call `instrument()` once per process, in the client and in the worker (at import of the
    tasks module: the worker's pool processes are forked from it and keep the receivers).
    """

    _active: ClassVar["CeleriacInstrumentor | None"] = None
    _install_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self._tracer: trace.Tracer | None = None
        self._lock = threading.Lock()
        self._publishing: OrderedDict[str, trace.Span] = OrderedDict()
        self._running: dict[str, _Run] = {}
        self._finished: OrderedDict[str, otel_context.Context] = OrderedDict()
        # The bound methods, kept: signals disconnect a receiver by identity.
        self._receivers = {name: getattr(self, f"_on_{name}") for name in _SIGNALS}

    @property
    def is_instrumented(self) -> bool:
        return CeleriacInstrumentor._active is self

    def instrument(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        """Start tracing (the global TracerProvider unless one is given). Once per process:
        a second call, on this or another instrumentor, changes nothing."""
        with CeleriacInstrumentor._install_lock:
            if CeleriacInstrumentor._active is not None:
                return
            self._tracer = trace.get_tracer("celeriac.contrib.opentelemetry", __version__, tracer_provider)
            for name, receiver in self._receivers.items():
                getattr(signals, name).connect(receiver)
            CeleriacInstrumentor._active = self

    def uninstrument(self) -> None:
        """Stop tracing; spans still open (publishes not yet confirmed) are ended as they are."""
        with CeleriacInstrumentor._install_lock:
            if CeleriacInstrumentor._active is not self:
                return
            for name, receiver in self._receivers.items():
                getattr(signals, name).disconnect(receiver)
            CeleriacInstrumentor._active = None
        with self._lock:
            pending, self._publishing = list(self._publishing.values()), OrderedDict()
            self._finished.clear()
        for span in pending:
            span.end()

    # --- publishing ---

    def _on_before_task_publish(self, sender: Any = None, headers: Any = None, routing_key: Any = None,
                                **_: Any) -> None:
        if self._tracer is None or not isinstance(headers, dict) or not headers.get("id"):
            return
        task_id = str(headers["id"])
        name = str(headers.get("task") or sender)
        span = self._tracer.start_span(f"apply_async/{name}", context=self._parent_of(headers),
                                       kind=trace.SpanKind.PRODUCER)
        if span.is_recording():
            span.set_attributes(_present({
                ACTION: "apply_async", TASK_NAME: name, MESSAGE_ID: task_id, DESTINATION: routing_key,
                RETRIES: headers.get("retries") or None, ETA: headers.get("eta"),
                EXPIRES: headers.get("expires"), HOSTNAME: headers.get("origin")}))
        # The message carries the publish span's context; whatever traceparent it inherited
        # (a retry copies its request's headers) is replaced.
        propagate.inject(headers, context=trace.set_span_in_context(span))
        evicted: list[trace.Span] = []
        with self._lock:
            previous = self._publishing.pop(task_id, None)
            if previous is not None:
                evicted.append(previous)
            self._publishing[task_id] = span
            while len(self._publishing) > MAX_PENDING_PUBLISHES:
                evicted.append(self._publishing.popitem(last=False)[1])
        for stale in evicted:
            stale.end()

    def _on_after_task_publish(self, headers: Any = None, **_: Any) -> None:
        if not isinstance(headers, dict) or not headers.get("id"):
            return
        with self._lock:
            span = self._publishing.pop(str(headers["id"]), None)
        if span is not None:
            span.end()

    def _parent_of(self, headers: dict[str, Any]) -> otel_context.Context | None:
        """None (the active span is the parent) unless no span is active and the message
        follows a task this process ran: then that task's run span."""
        if trace.get_current_span().get_span_context().is_valid:
            return None
        with self._lock:
            for key in (headers.get("id"), headers.get("parent_id")):  # a retry has the run's own id
                found = self._finished.get(str(key)) if key else None
                if found is not None:
                    return found
        return None

    # --- running ---

    def _on_task_prerun(self, task_id: Any = None, task: Any = None, **_: Any) -> None:
        if self._tracer is None or task is None or task_id is None:
            return
        request = task.request
        parent: otel_context.Context | None = propagate.extract(request.headers or {})
        if not trace.get_current_span(parent).get_span_context().is_valid:
            parent = None  # no context in the message (an uninstrumented client, apply()): the active span
        span = self._tracer.start_span(f"run/{task.name}", context=parent, kind=trace.SpanKind.CONSUMER)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        with self._lock:
            self._running[str(task_id)] = _Run(span, token, threading.get_ident(), request)

    def _on_task_postrun(self, task_id: Any = None, task: Any = None, state: Any = None, **_: Any) -> None:
        with self._lock:
            run = self._running.pop(str(task_id), None)
        if run is None:
            return
        span, request = run.span, run.request
        if span.is_recording():
            delivery = dict(request.delivery_info or {})
            span.set_attributes(_present({
                ACTION: "run", TASK_NAME: getattr(task, "name", None) or request.task, STATE: state,
                MESSAGE_ID: str(task_id), DESTINATION: delivery.get("routing_key"),
                CONVERSATION_ID: request.correlation_id, HOSTNAME: request.hostname,
                RETRIES: request.retries or None, ETA: request.eta, EXPIRES: request.expires,
                PRIORITY: delivery.get("priority"), DELIVERY_INFO: str(delivery) if delivery else None}))
        # The watchdog thread reports a task past its hard time limit; the context it attached
        # belongs to the task's thread, which the process is about to end with.
        if run.thread == threading.get_ident():
            otel_context.detach(run.token)
        span.end()
        remembered = trace.set_span_in_context(trace.NonRecordingSpan(span.get_span_context()))
        with self._lock:
            self._finished[str(task_id)] = remembered
            self._finished.move_to_end(str(task_id))
            while len(self._finished) > REMEMBERED_RUNS:
                self._finished.popitem(last=False)

    def _on_task_failure(self, task_id: Any = None, exception: BaseException | None = None, **_: Any) -> None:
        run = self._running.get(str(task_id))
        if run is None or not run.span.is_recording():
            return
        if exception is not None:
            run.span.record_exception(exception)
            description = f"{type(exception).__name__}: {exception}"
        else:
            description = states.FAILURE
        run.span.set_status(trace.Status(trace.StatusCode.ERROR, description))

    def _on_task_retry(self, request: Any = None, reason: Any = None, **_: Any) -> None:
        run = self._running.get(str(getattr(request, "id", None)))
        if run is not None and run.span.is_recording():
            run.span.set_attribute(RETRY_REASON, str(reason))


def _present(attributes: dict[str, Any]) -> dict[str, Any]:
    """The attributes that have a value, as OpenTelemetry accepts them (str, bool, int, float)."""
    return {key: value if isinstance(value, (str, bool, int, float)) else str(value)
            for key, value in attributes.items() if value is not None and value != ""}
