"""The consumer loop of one pool slot: fetch -> decode -> execute -> store -> ack.

Results, retry messages and acks are collected in a Batch and written together: a
result is always stored before its message is acked, so a crash in between re-runs the
task (at-least-once) and never loses its outcome.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from .. import history, protocol, signals, states, unique
from ..brokers import Delivery, Outgoing
from ..backends import StoredResult
from ..backends.base import ChordPart
from ..exceptions import (ContentDisallowed, DecodeError, NotRegistered, OperationalError,
                          TaskRevokedError, TimeLimitExceeded, WorkerLostError)
from ..task import Context, Task
from . import following, rejection, slotinfo, workflow
from .execute import Outcome, exception_info, trace
from .limits import HARD_LIMIT_EXIT_CODE, Limiter, limits_for
from .locks import defer_if_locked
from .ratelimit import defer_if_limited
from .remote import ProcessControl
from .revocations import Revocations

if TYPE_CHECKING:
    from ..app import Celeriac
    from ..events import EventDispatcher
    from .aio import AsyncRunner

logger = logging.getLogger("celeriac.worker")

FLUSH_AFTER = 0.005  # seconds a finished result may wait to be written with later ones
REDELIVERED_HEADER = rejection.REDELIVERED_HEADER
UNIQUE_HEADER = unique.UNIQUE_HEADER
FOLLOW_HEADER = unique.FOLLOW_HEADER
# Header keys that are the protocol's own: `request.headers` shows the others (Celery's meaning).
_NOT_CUSTOM = protocol.CORE_HEADERS | {"compression", REDELIVERED_HEADER, protocol.SENT_HEADER}


class SlotState(Protocol):
    """What a pool slot tells its supervisor (shared memory for process children)."""

    ready: int
    tag: bytes
    started: float
    async_running: int
    hard_deadline: float  # epoch seconds; 0 when the running task has no enforced hard limit
    task_id: bytes  # of the running (sync) task: what revoke(terminate=True) looks for
    task_name: bytes
    thread_ident: int
    processed: int
    events_dropped: int
    info: bytes  # the running request's details (slotinfo.py), for `inspect active`
    totals: bytes  # finished tasks by name, for `inspect stats`
    totals_seq: int


@dataclass
class PlainSlot:
    ready: int = 0
    tag: bytes = b""
    started: float = 0.0
    async_running: int = 0
    hard_deadline: float = 0.0
    task_id: bytes = b""
    task_name: bytes = b""
    thread_ident: int = 0
    processed: int = 0
    events_dropped: int = 0
    info: bytes = b""
    totals: bytes = b""
    totals_seq: int = 0


@dataclass
class Batch:
    """Outcomes waiting to be written: publish retries, store results, then ack."""

    app: "Celeriac"
    publishes: list[Outgoing] = field(default_factory=list)
    results: list[StoredResult] = field(default_factory=list)
    acks: list[Delivery] = field(default_factory=list)
    dead: list[tuple[Delivery, str]] = field(default_factory=list)
    releases: list[Delivery] = field(default_factory=list)
    chord_parts: list[ChordPart] = field(default_factory=list)
    unique_done: list[tuple[str, str]] = field(default_factory=list)  # (unique key, task id) to let go of
    since: float = 0.0

    def __len__(self) -> int:
        return (len(self.acks) + len(self.dead) + len(self.releases) + len(self.results) + len(self.chord_parts)
                + len(self.unique_done))

    def mark(self) -> None:
        if not self.since:
            self.since = time.monotonic()

    def due(self) -> bool:
        return bool(self.since) and time.monotonic() - self.since >= FLUSH_AFTER

    def flush(self, stopping: Callable[[], bool] = lambda: False) -> None:
        """Write everything; on broker trouble keep retrying (the messages stay leased to us)."""
        delay = 0.1
        while len(self) or self.publishes:
            try:
                broker, backend = self.app.broker, self.app.backend
                if broker.transactional:  # one commit for the batch; forget nothing until it lands
                    with broker.transaction():
                        self._write_all(broker, backend, forget_as_written=False)
                    self._forget()
                else:
                    self._write_all(broker, backend, forget_as_written=True)
            except OperationalError as exc:
                if stopping():
                    logger.error("could not write %d outcome(s) before stopping (%s); their messages "
                                 "will be delivered again", len(self), exc)
                    raise
                logger.warning("could not write task outcomes, retrying in %.1fs: %s", delay, exc)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.since = 0.0

    def _write_all(self, broker: Any, backend: Any, forget_as_written: bool) -> None:
        # Order matters: results are stored first, so that whoever a follow-up message reaches
        # (the next step of a chain, a callback) already finds this task's outcome and children;
        # follow-ups are published and chord members recorded before the messages are acked, and
        # a chord they complete has its body published before the completing header is acked.
        # Unique keys are let go of just before the results are stored, so a client that sees
        # the final result can send the same call again at once.
        steps: list[tuple[str, Callable[[Any], None]]] = [
            ("unique_done", backend.release_unique),
            ("results", backend.store), ("publishes", self._publish), ("chord_parts", self._record_chords),
            ("dead", broker.dead_letter), ("releases", broker.release), ("acks", broker.ack)]
        for name, write in steps:
            items = getattr(self, name)
            if items:
                write(items)
                if forget_as_written:
                    setattr(self, name, [])

    def _publish(self, messages: list[Outgoing]) -> None:
        """What tasks sent on (chain steps, callbacks, retries, chord bodies): like any client,
        a worker sends task-sent for them when `task_send_sent_event` is on."""
        self.app.broker.publish(messages)
        if signals.after_task_publish.receivers:
            self.app._announce_published(messages)
        if self.app.conf.task_send_sent_event:
            self.app._send_sent_events(messages)

    def _record_chords(self, parts: list[ChordPart]) -> None:
        app = self.app
        publishes: list[Outgoing] = []
        results: list[StoredResult] = []

        def store(task_id: str, state: str, value: Any, traceback: str | None, name: str | None) -> None:
            results.append(workflow.encode_outcome(app, task_id, state, value, name=name, traceback=traceback))

        while parts:  # a chord that fails can fail a chord it belongs to: round after round
            more: list[ChordPart] = []
            for fired in app.backend.chord_parts_done(parts):
                workflow.fire_chord(app, fired, publishes, store, more)
            parts = more
        if publishes:
            self._publish(publishes)
        if results:
            app.backend.store(results)

    def _forget(self) -> None:
        self.publishes, self.results, self.dead, self.releases, self.acks = [], [], [], [], []
        self.chord_parts, self.unique_done = [], []


class Consumer:
    # How long one fetch waits for work; also how long a stop request can take to be noticed
    # (in-process test workers use a short one so that each test's worker stops at once).
    fetch_timeout: float = 1.0

    def __init__(self, app: "Celeriac", *, worker_id: str, owner: str, queues: list[str], prefetch: int,
                 hostname: str, slot: SlotState | None = None, async_runner: "AsyncRunner | None" = None,
                 events: "EventDispatcher | None" = None) -> None:
        self.app = app
        self.worker_id = worker_id
        self.owner = owner
        self.queues = queues
        self.prefetch = max(1, prefetch)
        self.hostname = hostname
        self.slot: SlotState = slot if slot is not None else PlainSlot()
        self.async_runner = async_runner
        self.stopping = False
        self.accept = protocol.accepted_types(app.conf.accept_content)
        self.max_deliveries = int(app.conf.task_max_deliveries or 0)
        self.track_started = bool(app.conf.task_track_started)
        self._unknown_logged: set[str] = set()
        self.processed = 0
        # (max tasks, max resident KiB) before a pool process is replaced; set by the supervisor.
        self.recycle_limits: tuple[int | None, int | None] | None = None
        self.recycled: str | None = None
        self.limiter: Limiter = Limiter()
        self.revocations = Revocations(app)
        self.remote: ProcessControl | None = None  # set by the supervisor
        self.default_rate_limit = app.conf.task_default_rate_limit
        self._running: tuple[Task[Any, Any], Context, Delivery] | None = None
        self.events = events  # None unless task events are on (-E)
        self.totals: dict[str, int] = {}  # finished tasks by name, for `inspect stats`
        self._totals_shown = 0
        self.history = bool(app.conf.get("task_history", True))  # records ride with the results (celeriac.history)

    def stop(self) -> None:
        self.stopping = True

    # --- the loop ---

    def run(self) -> None:
        broker = self.app.broker
        self.slot.thread_ident = threading.get_ident()
        self.slot.ready = 1
        backoff = 0.1
        fetch_failed = False
        while not self.stopping:
            if self.remote is not None:
                self.remote.refresh()
            try:
                if fetch_failed and not (self.async_runner and self.async_runner.in_flight):
                    # A fetch whose reply was lost may have leased messages we never saw: with
                    # nothing in hand, whatever the broker says this slot holds goes back.
                    returned = broker.requeue_owner(self.owner, None)
                    if returned:
                        logger.warning("gave back %d message(s) leased by a fetch whose reply was lost", returned)
                    fetch_failed = False
                in_flight = self.async_runner.in_flight if self.async_runner else 0
                deliveries = broker.fetch(self.queues, self.worker_id, self.owner, self.prefetch,
                                          timeout=self.fetch_timeout, in_flight=in_flight)
                backoff = 0.1
            except OperationalError as exc:
                fetch_failed = True
                logger.warning("cannot fetch from %s, retrying in %.1fs: %s", broker.safe_url, backoff, exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if deliveries:
                self.handle_batch(deliveries)
            if self._totals_shown != self.processed:
                self._totals_shown = self.processed
                slotinfo.publish_totals(self.slot, dict(self.totals))
        if self.async_runner is not None:
            self.async_runner.drain()

    def handle_batch(self, deliveries: list[Delivery]) -> None:
        batch = Batch(self.app)
        try:
            for index, delivery in enumerate(deliveries):
                if self.stopping:
                    batch.releases.extend(deliveries[index:])  # not started: back to the queue
                    break
                self.handle(delivery, batch)
                if self.recycle_limits and self._should_recycle():
                    self.stop()  # the rest of the batch goes back, then this pool process is replaced
                if batch.due():
                    batch.flush(lambda: self.stopping)
        finally:
            self.slot.tag = b""
            batch.flush(lambda: self.stopping)

    # --- one message ---

    def handle(self, delivery: Delivery, batch: Batch) -> None:
        try:
            msg = protocol.unpack(delivery.payload)
        except DecodeError as exc:
            logger.error("message %s on queue %r cannot be decoded and goes to the dead-letter queue: %s",
                         delivery.tag, delivery.queue, exc)
            batch.dead.append((delivery, f"cannot decode message: {exc}"))
            if signals.task_rejected.receivers:  # Celery's meaning: a message that is not a task
                signals.task_rejected.send(sender=self, message=delivery, exc=exc)
            return
        headers = msg.headers
        task_id, name = str(headers["id"]), str(headers["task"])
        if self.max_deliveries and delivery.deliveries > self.max_deliveries:
            reason = (f"delivered {delivery.deliveries} times without finishing (task_max_deliveries="
                      f"{self.max_deliveries}): it probably kills its worker process")
            logger.error("task %s[%s] goes to the dead-letter queue: %s", name, task_id, reason)
            batch.dead.append((delivery, reason))
            lost = WorkerLostError(reason)
            record = self._store(batch, task_id, states.FAILURE, lost, name=name)
            if self.events is not None:
                self.events.send("task-failed", uuid=task_id, name=name, exception=repr(lost), traceback=None)
            self._fail_undecoded(batch, msg, task_id, name, delivery, lost, record)
            return
        task = self.app.tasks.get(name)
        if task is None:
            self._unknown(batch, delivery, task_id, name, msg)
            return
        try:
            args, kwargs, embed = protocol.decode_body(msg, self.accept)
        except (DecodeError, ContentDisallowed) as exc:
            logger.error("task %s[%s]: body cannot be decoded, message goes to the dead-letter queue: %s",
                         name, task_id, exc)
            batch.dead.append((delivery, f"cannot decode body: {exc}"))
            self._store(batch, task_id, states.FAILURE, exc, name=name)
            return
        request = self._request(msg, task_id, name, args, kwargs, embed, delivery)
        if signals.task_received.receivers:
            signals.task_received.send(sender=self, request=request)
        request.received_at = time.time()
        request.body = msg.body if msg.content_type == protocol.JSON else None  # the history keeps it as sent
        if self.events is not None:
            self.events.send("task-received", uuid=task_id, name=name, args=headers.get("argsrepr"),
                             kwargs=headers.get("kwargsrepr"), root_id=headers.get("root_id"),
                             parent_id=headers.get("parent_id"), retries=headers.get("retries", 0),
                             eta=headers.get("eta"), expires=headers.get("expires"))
        if headers.get(workflow.CHORD_BODY_HEADER) and self._already_final(task_id):
            # A second copy of a chord body: the header that fired it was re-run after a crash
            # between publishing the body and its own ack. The body already ran; this copy must not.
            logger.warning("task %s[%s] is the body of chord %s and has already run; duplicate dropped",
                           name, task_id, headers.get(workflow.CHORD_BODY_HEADER))
            batch.acks.append(delivery)
            batch.mark()
            return
        if self.remote is not None:
            self.remote.refresh()
        if self.revocations.is_revoked(task_id):
            self._discard(batch, delivery, task, request, "was revoked", expired=False)
            return
        if request.stamps and (stamp := self.revocations.revoked_stamp(request.stamps)):
            self._discard(batch, delivery, task, request, f"was revoked by its stamp {stamp}", expired=False)
            return
        expires = headers.get("expires")
        if expires and (protocol.iso_to_epoch(expires) or 0) < time.time():
            self._discard(batch, delivery, task, request, f"expired at {expires}", expired=True)
            return
        deferred = self._deferral(task, msg, delivery, request)
        if isinstance(deferred, Outcome):  # the same call ran as another task: its outcome is ours
            self.finish(task, request, delivery, deferred, batch)
            return
        if deferred is not None:  # back to the broker, to run later: the wait never holds a slot
            batch.publishes.append(deferred)
            batch.acks.append(delivery)
            batch.mark()
            return
        track = task.track_started if task.track_started is not None else self.track_started
        if track:
            self.app.backend.store([self.app.backend.encode(self.app.result_meta(
                task_id, states.STARTED, {"pid": _pid(), "hostname": self.hostname}, request=request, task=task))])
        limits = limits_for(task, request, self.app.conf)
        request.started_at = time.time()
        if self.events is not None:
            self.events.send("task-started", uuid=task_id)
        if task.is_async and self.async_runner is not None:
            batch.flush(lambda: self.stopping)  # do not hold earlier outcomes while the loop is busy
            self.async_runner.submit(task, request, args, kwargs, delivery, limits)
            return
        self.slot.tag = delivery.tag.encode()
        self.slot.task_id = task_id.encode()[:64]
        self.slot.task_name = name.encode()[:128]
        slotinfo.write_info(self.slot, task_id, request.delivery_info, msg.content_type, msg.body,
                            (headers.get("argsrepr"), headers.get("kwargsrepr")))
        self.slot.started = time.time()
        started = time.perf_counter()
        if task.is_async:  # thread pool without a loop: run it to completion here
            from .execute import _run_coroutine, trace_async
            outcome = _run_coroutine(trace_async(task, request, args, kwargs, limits))
        else:
            if limits[1] and self.limiter.enforces_hard:
                self._running = (task, request, delivery)
                self.slot.hard_deadline = self.slot.started + limits[1]
            outcome = trace(task, request, args, kwargs, self.limiter, limits)
            self._running = None
            self.slot.hard_deadline = 0.0
        self.slot.tag = b""
        self.slot.task_id = b""
        self.slot.task_name = b""
        self.finish(task, request, delivery, outcome, batch, time.perf_counter() - started)

    def _should_recycle(self) -> bool:
        assert self.recycle_limits is not None
        max_tasks, max_kib = self.recycle_limits
        if max_tasks and self.processed >= max_tasks:
            self.recycled = f"after {self.processed} tasks (--max-tasks-per-child {max_tasks})"
        elif max_kib and (rss := _resident_kib()) > max_kib:
            self.recycled = f"using {rss} KiB of memory (--max-memory-per-child {max_kib})"
        return self.recycled is not None

    def on_hard_limit(self, hard: float) -> None:
        """The running task is past its hard time limit (called by the limiter's watchdog thread):
        record its FAILURE and ack its message, then end this pool process."""
        running = self._running
        if running is None:
            return
        task, request, delivery = running
        exc = TimeLimitExceeded(f"task {task.name}[{request.id}] exceeded its hard time limit of {hard:g}s "
                                "and was ended")
        logger.error("Hard time limit (%gs) exceeded for %s[%s]; ending its pool process (a fresh one takes "
                     "its place)", hard, task.name, request.id)
        outcome = Outcome(states.FAILURE, exc=exc, einfo=exception_info(exc))
        try:
            from .execute import _after
            _after(task, request, tuple(request.args or ()), dict(request.kwargs or {}), outcome)
            self.app.broker.take_over_connections()
            batch = Batch(self.app)
            self.finish(task, request, delivery, outcome, batch, hard)
            batch.flush()
            if self.events is not None:
                self.events.close()  # the process ends below: send its last events now
        except Exception:
            logger.exception("could not record the time limit of %s[%s]; its message will be delivered again",
                             task.name, request.id)
        finally:
            os._exit(HARD_LIMIT_EXIT_CODE)

    def _deferral(self, task: Task[Any, Any], msg: protocol.TaskMessage, delivery: Delivery,
                  request: Context) -> Outgoing | Outcome | None:
        """Over its rate limit (deferred to its reserved start time), or its lock held by
        another run (deferred briefly): the message to publish instead of running now. A
        canvas member following a pending unique call may instead take that call's outcome."""
        if FOLLOW_HEADER in msg.headers:
            followed = following.follow(self.app, msg, delivery, request)
            if followed is not None:
                return followed
        if task.rate_limit is not None or self.default_rate_limit:
            deferred = defer_if_limited(self.app, task, msg, delivery, self.worker_id)
            if deferred is not None:
                return deferred
        return defer_if_locked(self.app, task, msg, delivery, request) if task.lock else None

    def _request(self, msg: protocol.TaskMessage, task_id: str, name: str, args: tuple[Any, ...],
                 kwargs: dict[str, Any], embed: dict[str, Any], delivery: Delivery) -> Context:
        headers = msg.headers
        return Context(
            id=task_id, task=name, args=args, kwargs=kwargs, retries=int(headers.get("retries") or 0),
            is_eager=False, called_directly=False, eta=headers.get("eta"), expires=headers.get("expires"),
            hostname=self.hostname, root_id=headers.get("root_id"), parent_id=headers.get("parent_id"),
            group=headers.get("group"), group_index=headers.get("group_index"),
            correlation_id=msg.properties.get("correlation_id", task_id),
            reply_to=msg.properties.get("reply_to"), origin=headers.get("origin"), shadow=headers.get("shadow"),
            timelimit=tuple(headers.get("timelimit") or (None, None)),
            callbacks=embed.get("callbacks"), errbacks=embed.get("errbacks"), chain=embed.get("chain"),
            chord=embed.get("chord"), ignore_result=bool(headers.get("ignore_result")),
            delivery_info={"routing_key": delivery.queue, "priority": delivery.priority,
                           "redelivered": delivery.deliveries > 1 or bool(headers.get(REDELIVERED_HEADER)),
                           "exchange": ""},
            headers={k: v for k, v in headers.items() if k not in _NOT_CUSTOM} or None,
            properties=msg.properties, replaced_task_nesting=int(headers.get("replaced_task_nesting") or 0),
            stamped_headers=headers.get("stamped_headers"), stamps=headers.get("stamps"),
            argsrepr=headers.get("argsrepr"), kwargsrepr=headers.get("kwargsrepr"))

    def _unknown(self, batch: Batch, delivery: Delivery, task_id: str, name: str, msg: Any) -> None:
        if name not in self._unknown_logged:
            self._unknown_logged.add(name)
            logger.error("Received unregistered task of type %r (task id %s): the worker does not know it. "
                         "Is the module that defines it imported by the worker (-A / include=)? "
                         "The task is marked FAILURE with NotRegistered.", name, task_id)
        record = self._store(batch, task_id, states.FAILURE, NotRegistered(name), name=name)
        self._fail_undecoded(batch, msg, task_id, name, delivery, NotRegistered(name), record)
        batch.acks.append(delivery)
        if signals.task_unknown.receivers:
            signals.task_unknown.send(sender=None, name=name, id=task_id, message=msg, exc=NotRegistered(name))

    def _discard(self, batch: Batch, delivery: Delivery, task: Task[Any, Any], request: Context, why: str,
                 expired: bool) -> None:
        """A revoked or expired task: not run, REVOKED, and its workflow told (as for a failure)."""
        logger.info("task %s[%s] %s and is discarded (state REVOKED)", task.name, request.id, why)
        error = TaskRevokedError(f"task {task.name}[{request.id}] {why}")
        record = self._store(batch, str(request.id), states.REVOKED, error, name=task.name, request=request)
        self.fail_workflow(batch, request, states.REVOKED, error, record)
        batch.acks.append(delivery)
        if self.events is not None:
            self.events.send("task-revoked", uuid=str(request.id), terminated=False, signum=None, expired=expired)
        if signals.task_revoked.receivers:
            signals.task_revoked.send(sender=task, request=request, terminated=False, signum=None, expired=expired)

    def _already_final(self, task_id: str) -> bool:
        meta = self.app.backend.get(task_id)
        return meta is not None and meta.get("status") in states.READY_STATES

    def _fail_undecoded(self, batch: Batch, msg: protocol.TaskMessage, task_id: str, name: str,
                        delivery: Delivery, error: BaseException, record: StoredResult) -> None:
        try:
            args, kwargs, embed = protocol.decode_body(msg, self.accept)
        except (DecodeError, ContentDisallowed):
            return
        request = self._request(msg, task_id, name, args, kwargs, embed, delivery)
        self.fail_workflow(batch, request, states.FAILURE, error, record)

    def _store(self, batch: Batch, task_id: str, status: str, result: Any, *, name: str | None = None,
               request: Context | None = None, task: Task[Any, Any] | None = None,
               traceback: str | None = None) -> StoredResult:
        # A value that cannot be encoded is stored as that failure, so get() does not hang.
        record = workflow.encode_outcome(self.app, task_id, status, result, name=name or (task.name if task else None),
                                         request=request, traceback=traceback, hostname=self.hostname)
        if self.history:
            record.history = history.record_for(task_id, record.status, name or (task.name if task else None),
                                                record.data, request, self.hostname)
        batch.results.append(record)
        if request is not None and request.id == task_id:
            self._let_go(batch, request, task_id, status)
        batch.mark()
        return record

    @staticmethod
    def _let_go(batch: Batch, request: Context, task_id: str, status: str) -> None:
        """A run that ended lets go of its lock; a task that is done, of its unique key."""
        if request.lock_key and (status in states.READY_STATES or status == states.RETRY):
            batch.unique_done.append((request.lock_key, task_id))
        key = request.headers.get(UNIQUE_HEADER) if request.headers else None
        if key and status in states.READY_STATES:  # the same call may be sent again
            batch.unique_done.append((str(key), task_id))

    # --- outcome -> result + ack ---

    def finish(self, task: Task[Any, Any], request: Context, delivery: Delivery, outcome: Outcome,
               batch: Batch, runtime: float = 0.0) -> None:
        task_id = str(request.id)
        ignore = request.ignore_result or bool(task.ignore_result)
        state = outcome.state
        self.processed += 1
        self.slot.processed += 1
        self.totals[task.name] = self.totals.get(task.name, 0) + 1
        flows = workflow.in_workflow(request)
        record: StoredResult | None = None
        if self.events is not None:
            self._outcome_event(task_id, outcome, runtime)
        if state == states.SUCCESS:
            if logger.isEnabledFor(logging.INFO):
                logger.info("Task %s[%s] succeeded in %.6fs: %s", task.name, task_id, runtime,
                            protocol._saferepr(outcome.retval, 256))
            if flows:
                workflow.after_success(self.app, request, outcome.retval, batch.publishes, self._storer(batch),
                                       batch.chord_parts)
            if not ignore:
                record = self._store(batch, task_id, state, outcome.retval, request=request, task=task)
        elif state in (states.FAILURE, states.REVOKED):
            assert outcome.einfo is not None and outcome.exc is not None
            if state == states.REVOKED:
                logger.warning("Task %s[%s] was terminated (revoked): %s", task.name, task_id, outcome.exc)
            elif task.throws and isinstance(outcome.exc, tuple(task.throws)):
                logger.info("Task %s[%s] raised expected: %r", task.name, task_id, outcome.exc)
            else:
                logger.error("Task %s[%s] raised unexpected: %r\n%s", task.name, task_id, outcome.exc,
                             outcome.einfo.traceback.rstrip())
            if not ignore or task.store_errors_even_if_ignored:
                record = self._store(batch, task_id, state, outcome.exc, request=request, task=task,
                                     traceback=outcome.einfo.traceback)
            if flows:
                workflow.after_failure(self.app, request, state, outcome.exc, outcome.einfo.traceback,
                                       batch.publishes, self._storer(batch), batch.chord_parts)
        elif state == states.RETRY:
            assert outcome.retry is not None and outcome.einfo is not None
            logger.info("Task %s[%s] retry: %s", task.name, task_id, outcome.retry)
            if not getattr(outcome.retry, "sent", False):
                batch.publishes.append(self.app.retry_message(task, request, outcome.retry))
            if not ignore:
                self._store(batch, task_id, state, outcome.exc, request=request, task=task,
                            traceback=outcome.einfo.traceback)
        elif state == states.REJECTED:
            assert outcome.exc is not None
            if getattr(outcome.exc, "requeue", False):
                rejection.requeue(self, task, request, delivery, outcome.exc, batch)
                return
            rejection.for_good(self, task, request, delivery, outcome.exc, batch, ignore)
            return
        elif state == states.IGNORED and request.replaced_by:
            # Task.replace(): the replacement goes out with this message's ack.
            batch.publishes.extend(request.replaced_by)
        if flows and state in (states.SUCCESS, states.FAILURE, states.REVOKED):
            value = outcome.retval if state == states.SUCCESS else outcome.exc
            part = workflow.chord_part(self.app, request, record, state, value,
                                       outcome.einfo.traceback if outcome.einfo else None, self.hostname)
            if part is not None:
                batch.chord_parts.append(part)
        batch.acks.append(delivery)
        batch.mark()

    def _outcome_event(self, task_id: str, outcome: Outcome, runtime: float) -> None:
        assert self.events is not None
        state, send = outcome.state, self.events.send
        traceback = outcome.einfo.traceback if outcome.einfo is not None else None
        if state == states.SUCCESS:
            send("task-succeeded", uuid=task_id, result=protocol._saferepr(outcome.retval, 256), runtime=runtime)
        elif state == states.FAILURE:
            send("task-failed", uuid=task_id, exception=repr(outcome.exc), traceback=traceback, runtime=runtime)
        elif state == states.REVOKED:
            send("task-revoked", uuid=task_id, terminated=True, signum=getattr(outcome.exc, "signum", None),
                 expired=False)
        elif state == states.RETRY:
            send("task-retried", uuid=task_id, exception=repr(outcome.exc), traceback=traceback)
        elif state == states.REJECTED:
            requeue = bool(getattr(outcome.exc, "requeue", False))
            if not requeue:  # it ends FAILURE: task-failed, then task-rejected (Celery's order)
                send("task-failed", uuid=task_id, exception=repr(outcome.exc), traceback=None, runtime=runtime)
            send("task-rejected", uuid=task_id, requeue=requeue)
        self.slot.events_dropped = self.events.dropped

    def _storer(self, batch: Batch) -> workflow.StoreFn:
        def store(task_id: str, state: str, value: Any, traceback: str | None, name: str | None) -> None:
            self._store(batch, task_id, state, value, name=name, traceback=traceback)
        return store

    def fail_workflow(self, batch: Batch, request: Context, state: str, exc: BaseException,
                      record: StoredResult | None) -> None:
        """A task that ends without running (expired, unregistered, poison): its workflow goes on
        as if it failed, so nothing downstream waits forever."""
        if not workflow.in_workflow(request):
            return
        workflow.after_failure(self.app, request, state, exc, None, batch.publishes, self._storer(batch),
                               batch.chord_parts)
        part = workflow.chord_part(self.app, request, record, state, exc, None, self.hostname)
        if part is not None:
            batch.chord_parts.append(part)


def _resident_kib() -> int:
    """This process's resident memory now (not its peak: a fresh process starts low)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        import resource
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _pid() -> int:
    import os
    return os.getpid()
