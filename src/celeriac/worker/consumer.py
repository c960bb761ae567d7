"""The loop of one pool slot: fetch -> decode -> checks -> execute -> finish -> flush.

Decoding and checks are small named steps (checks.py) that may end a message early;
a task that passes them runs here; every ending goes through `finish` into a Batch
(batch.py), written together: a result is always stored before its message is acked, so
a crash in between re-runs the task (at-least-once) and never loses its outcome.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .. import protocol, states
from ..brokers import Broker, Delivery
from ..exceptions import OperationalError, TimeLimitExceeded
from . import slotinfo
from .batch import Batch
from .checks import STEPS
from ..execution import Outcome, _after, _run_coroutine, exception_info, trace, trace_async
from .job import Job
from .limits import HARD_LIMIT_EXIT_CODE, Limiter, limits_for
from .outcomes import Ending, Ran
from .remote import ProcessControl
from .revocations import Revocations

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..app import Celeriac
    from ..events import EventDispatcher
    from .aio import AsyncRunner

__all__ = ["Batch", "Consumer", "PlainSlot", "SlotState"]

logger = logging.getLogger("celeriac.worker")

Limits = tuple[float | None, float | None]


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
        self.unknown_logged: set[str] = set()  # unregistered task names already explained in the log
        self.processed = 0
        # (max tasks, max resident KiB) before a pool process is replaced; set by the pool.
        self.recycle_limits: tuple[int | None, int | None] | None = None
        self.recycled: str | None = None
        self.limiter: Limiter = Limiter()
        self.revocations = Revocations(app)
        self.remote: ProcessControl | None = None  # set by the worker
        self.default_rate_limit = app.conf.task_default_rate_limit
        self._running: Job | None = None  # a sync task under an enforced hard time limit
        self.events = events  # None unless task events are on (-E)
        self.totals: dict[str, int] = {}  # finished tasks by name, for `inspect stats`
        self._totals_shown = 0
        self.history = bool(app.conf.get("task_history", True))  # records ride with the results (celeriac.history)
        self._fetch_failed = False
        self._claimed: list[Delivery] = []  # claimed with the last batch's outcomes (Batch.claim_next)
        # Outcomes of finished batches not written yet: they wait (at most FLUSH_AFTER) for one
        # commit with the next batches', which the slot claims with broker.claim_now meanwhile.
        self._carried: Batch | None = None
        self._batch: Batch | None = None  # the one being filled, for on_hard_limit

    def stop(self) -> None:
        self.stopping = True

    # --- the loop ---

    def run(self) -> None:
        self.slot.thread_ident = threading.get_ident()
        self._prepare_queues()
        self.slot.ready = 1
        backoff = 0.1
        while not self.stopping:
            if self.remote is not None:
                self.remote.refresh()
            try:
                deliveries, self._claimed = self._claimed or self._fetch(), []
                backoff = 0.1
            except OperationalError as exc:
                self._fetch_failed = True
                logger.warning("cannot fetch from %s, retrying in %.1fs: %s", self.app.broker.safe_url, backoff, exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if deliveries:
                self.handle_batch(deliveries)
            if self._totals_shown != self.processed:
                self._totals_shown = self.processed
                slotinfo.publish_totals(self.slot, dict(self.totals))
        if self._claimed:  # claimed with the last batch, then told to stop: not started, back to the queue
            self.handle_batch(self._claimed)
        self._flush_carried()
        if self.async_runner is not None:
            self.async_runner.drain()

    def _prepare_queues(self) -> None:
        """Declared before the worker says "ready", so whatever is sent after that has a queue."""
        try:
            self.app.broker.prepare(self.queues)
        except OperationalError as exc:  # the fetch loop reconnects and declares them then
            logger.warning("could not declare the queues %s on %s yet: %s", ", ".join(self.queues),
                           self.app.broker.safe_url, exc)

    def _fetch(self) -> list[Delivery]:
        broker = self.app.broker
        in_flight = self.async_runner.in_flight if self.async_runner else 0
        if self._fetch_failed and not in_flight:
            # A fetch whose reply was lost may have leased messages we never saw: with
            # nothing in hand, whatever the broker says this slot holds goes back.
            returned = broker.requeue_owner(self.owner, None)
            if returned:
                logger.warning("gave back %d message(s) leased by a fetch whose reply was lost", returned)
            self._fetch_failed = False
        if self._carried is not None:
            found = self._claim_now(broker)
            if found:
                return found
        return broker.fetch(self.queues, self.worker_id, self.owner, self.prefetch, timeout=self.fetch_timeout,
                            in_flight=in_flight)

    def _claim_now(self, broker: "Broker") -> list[Delivery] | None:
        """The next batch while earlier outcomes wait to be written; with nothing to claim (or
        no answer) they are written first: a slot never waits for work holding them."""
        try:
            found = broker.claim_now(self.queues, self.worker_id, self.owner, self.prefetch)
        except OperationalError:
            self._flush_carried()  # before the next fetch gives back what this slot holds
            raise
        if not found:
            self._flush_carried()
        return found

    def _flush_carried(self) -> None:
        carried, self._carried = self._carried, None
        if carried is not None:
            carried.flush(lambda: self.stopping)

    def handle_batch(self, deliveries: list[Delivery]) -> None:
        batch, self._carried = self._carried or Batch(self.app), None
        self._batch = batch  # for on_hard_limit: what this slot has not written yet
        completed = False
        try:
            for index, delivery in enumerate(deliveries):
                if self.stopping:
                    batch.releases.extend(deliveries[index:])  # not started: back to the queue
                    break
                self.handle(delivery, batch)
                if self.recycle_limits and self._should_recycle():
                    self.stop()  # the rest of the batch goes back, then this pool process is replaced
                if batch.due() and index + 1 < len(deliveries):  # the last one: written below
                    batch.flush(lambda: self.stopping)
            completed = True
        finally:
            self.slot.tag = b""
            # Only after a full batch: a short one says the queue was running dry, and a claim
            # that finds nothing would only delay the batch's commit (and its results).
            # Every slot of a worker has an async runner (for `async def` tasks); only while one
            # of those runs does it fetch as usual (its outcomes are written from the loop's thread).
            full = completed and len(deliveries) >= self.prefetch and not (
                self.stopping or self._fetch_failed or (self.async_runner is not None and self.async_runner.in_flight))
            if full and not batch.due() and _claims_now(self.app.broker):
                self._carried = batch  # written with the next batches' outcomes (see _fetch)
            else:
                self._write(batch, claim=full)

    def _write(self, batch: Batch, claim: bool) -> None:
        if claim:
            batch.claim_next = self._claim_at_commit
        batch.flush(lambda: self.stopping)
        self._claimed = batch.claimed
        # A failed flush that carried a claim may have leased messages whose reply was
        # lost: the next fetch gives back whatever this slot holds (see _fetch).
        self._fetch_failed = self._fetch_failed or batch.claim_lost

    def _claim_at_commit(self, broker: "Broker") -> "Callable[[], list[Delivery]] | None":
        return broker.claim_at_commit(self.queues, self.worker_id, self.owner, self.prefetch)

    # --- one message ---

    def handle(self, delivery: Delivery, batch: Batch) -> None:
        job = Job(delivery)
        for step in STEPS:  # decode, then the checks: the first ending stops the message
            ending = step(self, job)
            if ending is not None:
                break
        else:
            ending = self.execute(job, batch)
        if ending is not None:  # None: an async task, finished later by its event loop
            self.finish(job, ending, batch)

    def execute(self, job: Job, batch: Batch) -> Ending | None:
        task, request = job.task, job.request
        assert task is not None and request is not None
        if task.track_started or (task.track_started is None and self.track_started):
            self._track_started(job, batch)
        limits = limits_for(task, request, self.app.conf)
        request.started_at = time.time()
        if self.events is not None:
            self.events.send("task-started", uuid=job.task_id)
        if task.is_async and self.async_runner is not None:
            batch.flush(lambda: self.stopping)  # do not hold earlier outcomes while the loop is busy
            self.async_runner.submit(job, limits)
            return None
        self._occupy(job)
        started = time.perf_counter()
        outcome = self._run_here(job, limits)
        runtime = time.perf_counter() - started
        self._vacate()
        return Ran(outcome, runtime)

    def _track_started(self, job: Job, batch: Batch) -> None:
        """STARTED (task_track_started): written, with whatever waits in the batch, before the run."""
        meta = self.app.result_meta(job.task_id, states.STARTED, {"pid": os.getpid(), "hostname": self.hostname},
                                    request=job.request, task=job.task)
        batch.results.append(self.app.backend.encode(meta))
        batch.flush(lambda: self.stopping)

    def _run_here(self, job: Job, limits: Limits) -> Outcome:
        task, request = job.task, job.request
        assert task is not None and request is not None
        args, kwargs = request.args, request.kwargs  # as decoded: the same objects the request shows
        if task.is_async:  # thread pool without a loop: run it to completion here
            return _run_coroutine(trace_async(task, request, args, kwargs, limits))  # type: ignore[no-any-return]
        if limits[1] and self.limiter.enforces_hard:
            self._running = job
            self.slot.hard_deadline = self.slot.started + limits[1]
        try:
            return trace(task, request, args, kwargs, self.limiter, limits)
        finally:
            self._running = None
            self.slot.hard_deadline = 0.0

    def _occupy(self, job: Job) -> None:
        """What the supervisor sees of the running task (shared memory for a pool process)."""
        msg, request = job.msg, job.request
        assert msg is not None and request is not None
        self.slot.tag = job.delivery.tag.encode()
        self.slot.task_id = job.task_id.encode()[:64]
        self.slot.task_name = job.name.encode()[:128]
        slotinfo.write_info(self.slot, job.task_id, request.delivery_info, msg.content_type, msg.body,
                            (msg.headers.get("argsrepr"), msg.headers.get("kwargsrepr")))
        self.slot.started = time.time()

    def _vacate(self) -> None:
        self.slot.tag = b""
        self.slot.task_id = b""
        self.slot.task_name = b""

    # --- every ending, written ---

    def finish(self, job: Job, ending: Ending, batch: Batch) -> None:
        """The one way out: the ending's results, publishes, chord parts, dead letters and acks go
        into the batch, with its events and signals."""
        ending.apply(self, job, batch)
        batch.mark()

    def count_processed(self, name: str) -> None:
        self.processed += 1
        self.slot.processed += 1
        self.totals[name] = self.totals.get(name, 0) + 1

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
        job = self._running
        if job is None or job.task is None or job.request is None:
            return
        task, request = job.task, job.request
        exc = TimeLimitExceeded(f"task {task.name}[{request.id}] exceeded its hard time limit of {hard:g}s "
                                "and was ended")
        logger.error("Hard time limit (%gs) exceeded for %s[%s]; ending its pool process (a fresh one takes "
                     "its place)", hard, task.name, request.id)
        outcome = Outcome(states.FAILURE, exc=exc, einfo=exception_info(exc))
        try:
            _after(task, request, tuple(request.args or ()), dict(request.kwargs or {}), outcome)
            self.app.broker.take_over_connections()
            # With the outcomes this slot finished before and has not written yet (the task
            # thread is stuck in the task, it does not touch them).
            batch = self._batch if self._batch is not None else Batch(self.app)
            self.finish(job, Ran(outcome, hard), batch)
            batch.flush()
            if self.events is not None:
                self.events.close()  # the process ends below: send its last events now
        except Exception:
            logger.exception("could not record the time limit of %s[%s]; its message will be delivered again",
                             task.name, request.id)
        finally:
            os._exit(HARD_LIMIT_EXIT_CODE)


def _claims_now(broker: Broker) -> bool:
    return type(broker).claim_now is not Broker.claim_now


def _resident_kib() -> int:
    """This process's resident memory now (not its peak: a fresh process starts low)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        import resource
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
