"""The worker's main process: starts pool slots, keeps the lease alive, replaces dead children.

It runs no task itself, so its heartbeat never waits behind a slow task: a worker's
messages are given back only when this process is gone (SIGKILL, crash), or at once for
one child when that child dies.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import signals
from ..exceptions import OperationalError
from .aio import AsyncRunner
from .consumer import Consumer, PlainSlot
from .limits import HARD_LIMIT_EXIT_CODE, ProcessLimiter, ThreadLimiter
from . import slotinfo
from .remote import ProcessControl, SupervisorControl
from .revocations import Revocations

if TYPE_CHECKING:
    from ..app import Celeriac

logger = logging.getLogger("celeriac.worker")

_PR_SET_PDEATHSIG = 1


class SharedSlot(ctypes.Structure):
    """Lives in shared memory: the child writes, the supervisor reads (no syscalls per task)."""

    _fields_ = [("ready", ctypes.c_int), ("tag", ctypes.c_char * 96), ("started", ctypes.c_double),
                ("async_running", ctypes.c_int), ("hard_deadline", ctypes.c_double),
                ("task_id", ctypes.c_char * 64), ("task_name", ctypes.c_char * 128),
                ("thread_ident", ctypes.c_ulonglong), ("processed", ctypes.c_long),
                ("events_dropped", ctypes.c_long), ("info", ctypes.c_char * slotinfo.INFO_SIZE),
                ("totals", ctypes.c_char * slotinfo.TOTALS_SIZE), ("totals_seq", ctypes.c_long)]


# How long past a hard time limit the supervisor waits for the pool process's own watchdog
# before it kills the process itself (a task stuck in C code that holds the GIL).
HARD_LIMIT_GRACE = 2.0
RECYCLED_EXIT_CODE = 76  # a pool process that ended itself after --max-tasks/memory-per-child


@dataclass
class PoolSlot:
    index: int
    generation: int
    owner: str
    slot: Any
    process: Any = None  # multiprocessing.Process for the process pool
    thread: threading.Thread | None = None
    consumer: Consumer | None = None


@dataclass
class WorkerOptions:
    concurrency: int
    pool: str
    queues: list[str]
    hostname: str
    prefetch_multiplier: int
    shutdown_timeout: float
    heartbeat_interval: float
    lease_timeout: float
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None  # KiB
    autoscale: tuple[int, int] | None = None  # (max, min) pool slots
    beat: bool = False  # `worker -B`: run the periodic-task scheduler in this process too
    send_events: bool = False  # `-E`: task and worker events


class Worker:
    def __init__(self, app: "Celeriac", options: WorkerOptions, install_signal_handlers: bool = True) -> None:
        self.app = app
        self.install_signal_handlers = install_signal_handlers
        self.ready = threading.Event()
        self._wakeup = threading.Event()  # set by stop(): the supervisor loop need not finish its nap
        self.options = options
        self.worker_id = f"{options.hostname}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # unique even for equal -n
        self.slots: list[PoolSlot] = []
        self._stop_requested = 0
        self._ctx = multiprocessing.get_context("fork")
        self._last_beat = 0.0
        self._last_cleanup = time.monotonic()
        self._pid = os.getpid()
        self.revocations = Revocations(app, interval=0.0)  # read on every tick (at most every 0.5 s)
        self.control = SupervisorControl(self)
        self._retiring: list[PoolSlot] = []
        self._last_scale_check = 0.0
        self._idle_since = time.monotonic()
        self._retired_processed = 0
        self._retired_totals: dict[str, int] = {}
        self._terminated: set[int] = set()
        self._beat: Any = None
        from ..events import EventDispatcher
        self.events = EventDispatcher(app, options.hostname, enabled=options.send_events)
        # Terminations not carried out yet: the task may start a moment after the revoke is read.
        self._to_terminate: dict[str, str] = {}
        # Expired results are deleted a few times per expiry period (at most every 5 minutes).
        expires = app.backend.expires
        self._cleanup_interval = 300.0 if not expires else max(0.5, min(300.0, expires / 4))
        signals.celeryd_init.send(sender=options.hostname, instance=self, conf=app.conf,
                                  options=dataclasses.asdict(options))

    # --- pool slots ---

    def _owner(self, index: int, generation: int) -> str:
        return f"{self.worker_id}/{index}.{generation}"

    def _consumer(self, owner: str, slot: Any) -> Consumer:
        runner = AsyncRunner(int(self.app.conf.worker_async_concurrency or 100))
        consumer = Consumer(self.app, worker_id=self.worker_id, owner=owner, queues=list(self.options.queues),
                            prefetch=self.options.prefetch_multiplier, hostname=self.options.hostname,
                            slot=slot, async_runner=runner, events=self.events if self.events.enabled else None)
        consumer.remote = ProcessControl(consumer, self.control.cursor,
                                         float(self.app.conf.worker_revoke_sync_interval))
        runner.bind(consumer)
        return consumer

    def processed_total(self) -> int:
        return self._retired_processed + sum(int(s.slot.processed) for s in self.slots)

    def totals_by_name(self) -> dict[str, int]:
        """Finished tasks by name, over every pool slot this worker has had."""
        totals = dict(self._retired_totals)
        for slot in self.slots + self._retiring:
            slotinfo.merge_totals(totals, slotinfo.read_totals(slot.slot) or {})
        return totals

    def _retire_counts(self, slot: PoolSlot) -> None:
        """A slot that ended keeps counting in the worker's totals."""
        self._retired_processed += int(slot.slot.processed)
        slotinfo.merge_totals(self._retired_totals, slotinfo.read_totals(slot.slot) or {})

    def grow(self, n: int) -> int:
        for _ in range(max(0, n)):
            index = max([s.index for s in self.slots] + [s.index for s in self._retiring] + [-1]) + 1
            self.slots.append(self._start_slot(index, 0))
        return len(self.slots)

    def shrink(self, n: int) -> int:
        """Warm-stop the newest slots (never the last one): they finish their task and give back the rest."""
        for _ in range(max(0, min(n, len(self.slots) - 1))):
            slot = self.slots.pop()
            self._retiring.append(slot)
            if slot.process is not None and slot.process.is_alive():
                os.kill(slot.process.pid, signal.SIGTERM)
            elif slot.consumer is not None:
                slot.consumer.stop()
        return len(self.slots)

    def _reap_retiring(self) -> None:
        for slot in list(self._retiring):
            if not self._alive(slot):
                self._retiring.remove(slot)
                self._retire_counts(slot)
                self._requeue(slot, None)  # normally nothing is left: it gave its messages back

    def _start_slot(self, index: int, generation: int) -> PoolSlot:
        owner = self._owner(index, generation)
        if self.options.pool == "process":
            shared = self._ctx.RawValue(SharedSlot)  # type: ignore[attr-defined]
            signals.worker_before_create_process.send(sender=self)
            process = self._ctx.Process(target=self._child_main, args=(owner, shared),
                                        name=f"ForkPoolWorker-{index + 1}", daemon=False)
            process.start()
            return PoolSlot(index, generation, owner, shared, process=process)
        plain = PlainSlot()
        consumer = self._consumer(owner, plain)
        consumer.limiter = ThreadLimiter()
        thread = threading.Thread(target=self._thread_main, args=(consumer,), name=f"ThreadPoolWorker-{index + 1}",
                                  daemon=True)
        thread.start()
        return PoolSlot(index, generation, owner, plain, thread=thread, consumer=consumer)

    def _thread_main(self, consumer: Consumer) -> None:
        try:
            consumer.run()
        except Exception:
            logger.exception("pool thread %s stopped by an internal error", threading.current_thread().name)

    def _child_main(self, owner: str, shared: Any) -> None:
        _die_with_parent(self._pid)
        consumer = self._consumer(owner, shared)
        consumer.limiter = ProcessLimiter(consumer.on_hard_limit)
        signal.signal(signal.SIGTERM, lambda *_: consumer.stop())
        # revoke(terminate=True): the supervisor asks the running task to end.
        signal.signal(signal.SIGUSR1, lambda *_: consumer.limiter.terminate("terminated by revoke()"))
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the supervisor decides
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signals.worker_process_init.send(sender=None)
        limits = (self.options.max_tasks_per_child, self.options.max_memory_per_child)
        consumer.recycle_limits = limits if any(limits) else None
        try:
            consumer.run()
        except Exception:
            logger.exception("pool process stopped by an internal error")
            os._exit(1)
        finally:
            signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)
            if consumer.events is not None:
                consumer.events.close()  # os._exit below skips atexit: the last events go now
            self._close_quietly()
        if consumer.recycled:
            logger.info("pool process %s is replaced %s", os.getpid(), consumer.recycled)
            os._exit(RECYCLED_EXIT_CODE)
        os._exit(0)

    def _close_quietly(self) -> None:
        try:  # say goodbye to the broker (RabbitMQ logs connections that just vanish)
            self.app.close()
        except Exception:  # closing a connection that is already broken: nothing left to do
            pass

    # --- life cycle ---

    def _request_stop(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        self._stop_signal = name
        self._stop_requested += 2 if signum == signal.SIGQUIT else 1  # SIGQUIT: at once, as in Celery
        if self._beat is not None:
            self._beat[0].stop()  # no new periodic tasks from a worker on its way out
        if self._stop_requested == 1:
            logger.warning("%s received: warm shutdown (running tasks finish, waiting up to %.0fs; "
                           "send it again to stop at once)", name, self.options.shutdown_timeout)
        else:
            logger.warning("%s received again: cold shutdown (running tasks go back to the queue)", name)

    def stop(self) -> None:
        """Ask for a warm shutdown (what SIGTERM does)."""
        self._stop_requested = max(1, self._stop_requested)
        self._wakeup.set()

    def heartbeat(self) -> None:
        info = {"hostname": self.options.hostname, "pid": os.getpid(), "pool": self.options.pool,
                "concurrency": self.options.concurrency, "queues": self.options.queues,
                **self._activity()}
        self.app.broker.heartbeat(self.worker_id, self.options.lease_timeout, info)
        if not self.app.broker.tracks_workers:
            self.app.backend.worker_heartbeat(self.worker_id, self.options.lease_timeout, info)
        self._last_beat = time.monotonic()
        if signals.heartbeat_sent.receivers:
            signals.heartbeat_sent.send(sender=self)
        if self.events.enabled:
            self._worker_event("worker-heartbeat")

    def _activity(self) -> dict[str, Any]:
        """What the dashboard shows of this worker (read from the slots' shared memory)."""
        running = [{"id": s.slot.task_id.decode(errors="replace"), "name": s.slot.task_name.decode(errors="replace"),
                    "started": float(s.slot.started)} for s in self.slots + self._retiring if s.slot.task_id]
        async_running = sum(int(s.slot.async_running) for s in self.slots + self._retiring)
        return {"active": len(running) + async_running, "running": running, "processed": self.processed_total(),
                "heartbeat_at": time.time()}

    def _worker_event(self, kind: str) -> None:
        from ..events import worker_fields
        slots = self.slots + self._retiring
        active = sum(1 for s in slots if s.slot.tag) + sum(int(s.slot.async_running) for s in slots)
        dropped = self.events.dropped + sum(int(s.slot.events_dropped) for s in slots)
        self.events.send(kind, active=active, processed=self.processed_total(), events_dropped=dropped,
                         **worker_fields(self.options.heartbeat_interval))

    def run(self) -> int:
        broker = self.app.broker
        if self.install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                signal.signal(sig, self._request_stop)
        try:
            self.heartbeat()  # the lease exists before any slot claims a message
            recovered = broker.recover()
            if recovered:
                logger.warning("gave back %d message(s) held by workers that died", recovered)
        except OperationalError as exc:
            logger.error("cannot reach the broker at %s: %s", broker.safe_url, exc)
            return 1
        signals.worker_init.send(sender=self)
        self.control.start()
        signals.celeryd_after_setup.send(sender=self.options.hostname, instance=self, conf=self.app.conf)
        self._warn_unenforceable_limits()
        if self.options.pool == "process":
            # Everything imported so far is shared copy-on-write with the children; keep the
            # cyclic GC from touching (and so copying) those pages in each child.
            gc.freeze()
        self.slots = [self._start_slot(i, 0) for i in range(self.options.concurrency)]
        self._wait_ready()
        if self.options.beat:
            self._start_beat()
        if self.events.enabled:
            self._worker_event("worker-online")
        logger.info("%s ready.", self.options.hostname)
        self.ready.set()
        signals.worker_ready.send(sender=self)
        try:
            while not self._stop_requested:
                self._tick()
        finally:
            self._shutdown()
        return 0

    def _warn_unenforceable_limits(self) -> None:
        if self.options.pool == "process":
            return
        limited = sorted(t.name for t in self.app.tasks.values() if t.time_limit)
        if self.app.conf.task_time_limit or limited:
            logger.warning(
                "hard time limits are not enforced in the thread pool (a thread cannot be ended): %s will "
                "run past their time_limit; soft limits still apply. Use the process pool (-P process) to "
                "enforce them.", ", ".join(limited) if limited else "all tasks")

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stop_requested:
            if all(s.slot.ready for s in self.slots):
                return
            self._reap()
            time.sleep(0.005)

    def _tick(self) -> None:
        sentinels = [s.process.sentinel for s in self.slots if s.process is not None]
        wait = max(0.05, min(0.5, self.options.heartbeat_interval - (time.monotonic() - self._last_beat)))
        if sentinels:
            multiprocessing.connection.wait(sentinels, timeout=wait)
        else:
            self._wakeup.wait(wait)
        self._reap()
        self._reap_retiring()
        self._kill_stuck_past_hard_limit()
        self._terminate_revoked()
        self.control.poll()
        if self.options.autoscale:
            self._autoscale()
        now = time.monotonic()
        try:
            if now - self._last_beat >= self.options.heartbeat_interval:
                self.heartbeat()
                recovered = self.app.broker.recover()
                if recovered:
                    logger.warning("gave back %d message(s) held by workers that died", recovered)
                self.app.broker.housekeeping()
            if now - self._last_cleanup >= self._cleanup_interval:
                self._last_cleanup = now
                removed = self.app.backend.cleanup()
                if removed:
                    logger.info("removed %d expired result(s)", removed)
        except OperationalError as exc:
            logger.warning("broker or result store unreachable (%s); retrying", exc)

    def _terminate_revoked(self) -> None:
        """End running tasks revoked with terminate=True (read from the durable store)."""
        for task_id, sig in self.revocations.refresh():
            if sig:
                self._to_terminate[task_id] = sig
        while len(self._to_terminate) > 10_000:  # tasks that ran elsewhere: forget the oldest
            self._to_terminate.pop(next(iter(self._to_terminate)))
        if not self._to_terminate:
            return
        wanted = self._to_terminate
        for slot in self.slots:
            running = bytes(slot.slot.task_id).decode()
            sig = wanted.pop(running, None) if running else None
            if sig is None:
                continue
            if slot.process is not None and slot.process.is_alive():
                if sig == "SIGKILL":
                    logger.warning("revoke: killing pool process %s running task %s", slot.process.pid, running)
                    self._terminated.add(slot.process.pid)
                    os.kill(slot.process.pid, signal.SIGKILL)
                else:
                    logger.warning("revoke: terminating task %s in pool process %s", running, slot.process.pid)
                    os.kill(slot.process.pid, signal.SIGUSR1)
            elif slot.consumer is not None:
                logger.warning("revoke: terminating task %s in pool thread %s (pure-Python code only)",
                               running, slot.index)
                slot.consumer.limiter.terminate_thread(int(slot.slot.thread_ident), "terminated by revoke()")

    def _autoscale(self) -> None:
        """Grow while every slot is busy and messages wait; shrink a slot idle for the keepalive."""
        now = time.monotonic()
        if now - self._last_scale_check < 1.0:
            return
        self._last_scale_check = now
        assert self.options.autoscale is not None
        most, least = self.options.autoscale
        busy = sum(1 for s in self.slots if bytes(s.slot.task_id) or s.slot.async_running)
        if busy:
            self._idle_since = now
        try:
            sizes = self.app.broker.queue_sizes(self.options.queues)
        except OperationalError:
            return
        waiting = sum(int(v.get("ready", 0)) for v in sizes.values())
        if waiting and busy >= len(self.slots) and len(self.slots) < most:
            grow = min(most - len(self.slots), max(1, waiting))
            logger.info("autoscale: %d message(s) waiting and every slot busy; growing the pool to %d",
                        waiting, len(self.slots) + grow)
            self.grow(grow)
            self._idle_since = now
        elif not waiting and len(self.slots) > least and busy < len(self.slots) \
                and now - self._idle_since >= float(self.app.conf.worker_autoscaler_keepalive):
            logger.info("autoscale: idle for %.0fs; shrinking the pool to %d", now - self._idle_since,
                        len(self.slots) - 1)
            self.shrink(1)
            self._idle_since = now

    def _kill_stuck_past_hard_limit(self) -> None:
        now = time.time()
        for slot in self.slots:
            deadline = slot.slot.hard_deadline
            if slot.process is not None and deadline and now > deadline + HARD_LIMIT_GRACE and slot.process.is_alive():
                logger.error("pool process %s is %.1fs past the hard time limit of message %s and did not end "
                             "itself (stuck in code that holds the GIL?); killing it", slot.process.pid,
                             now - deadline, bytes(slot.slot.tag).decode())
                slot.slot.hard_deadline = 0.0
                os.kill(slot.process.pid, signal.SIGKILL)

    def _reap(self) -> None:
        for i, slot in enumerate(self.slots):
            alive = slot.process.is_alive() if slot.process is not None else (
                slot.thread is not None and slot.thread.is_alive())
            if alive or self._stop_requested:
                continue
            self._retire_counts(slot)
            exitcode = slot.process.exitcode if slot.process is not None else None
            running = bytes(slot.slot.tag).decode() or None
            if exitcode == RECYCLED_EXIT_CODE and not self._stop_requested:  # max tasks / memory per child
                self._requeue(slot, None)
                self.slots[i] = self._start_slot(slot.index, slot.generation + 1)
                continue
            if exitcode == HARD_LIMIT_EXIT_CODE:  # it recorded and acked its task itself
                requeued = self._requeue(slot, None)
                logger.warning("pool process %s ended after a hard time limit; %d prefetched message(s) back "
                               "on the queue; starting a new one", slot.process.pid if slot.process else "?",
                               requeued)
                self.slots[i] = self._start_slot(slot.index, slot.generation + 1)
                continue
            # Which of several running async tasks killed the process is unknown: all keep their count.
            requeued = self._requeue(slot, running, keep_all_counts=bool(slot.slot.async_running))
            if slot.process is not None and slot.process.pid in self._terminated:
                self._terminated.discard(slot.process.pid)
                logger.warning("pool process %s killed by revoke(terminate=True, signal='SIGKILL'); %d message(s) "
                               "back on the queue (the revoked one is discarded when it comes back); starting a "
                               "new one", slot.process.pid, requeued)
                self.slots[i] = self._start_slot(slot.index, slot.generation + 1)
                continue
            logger.error("pool %s %s exited unexpectedly (exit code %s)%s; %d message(s) back on the queue; "
                         "starting a new one", "process" if slot.process else "thread",
                         slot.process.pid if slot.process else slot.index, exitcode,
                         f" while running message {running}" if running else "", requeued)
            self.slots[i] = self._start_slot(slot.index, slot.generation + 1)

    def _requeue(self, slot: PoolSlot, running: str | None, keep_all_counts: bool = False) -> int:
        for attempt in range(50):
            try:
                return self.app.broker.requeue_owner(slot.owner, running, keep_all_counts)
            except OperationalError as exc:
                logger.warning("cannot give back messages of %s yet: %s", slot.owner, exc)
                time.sleep(min(5.0, 0.1 * (attempt + 1)))
        return 0

    def _start_beat(self) -> None:
        # A thread, started after the pool is forked: the supervisor runs no task, so the
        # scheduler never waits behind one; a leased store keeps it single even with -B on
        # several workers.
        from ..beat import embedded_beat
        beat, thread = embedded_beat(self.app)
        signals.beat_embedded_init.send(sender=beat)
        thread.start()
        self._beat = (beat, thread)

    def _stop_beat(self) -> None:
        if self._beat is not None:
            beat, thread = self._beat
            beat.stop()
            thread.join(5)

    def _shutdown(self) -> None:
        self._stop_beat()
        signals.worker_shutting_down.send(sender=self, sig=getattr(self, "_stop_signal", "SIGTERM"),
                                          how="cold" if self._stop_requested > 1 else "warm", exitcode=0)
        for slot in (self.slots + self._retiring):
            if slot.process is not None and slot.process.is_alive():
                os.kill(slot.process.pid, signal.SIGTERM)
            elif slot.consumer is not None:
                slot.consumer.stop()
        deadline = time.monotonic() + self.options.shutdown_timeout
        warned_cold = False
        while any(self._alive(s) for s in (self.slots + self._retiring)):
            if self._stop_requested > 1 or time.monotonic() > deadline:
                if not warned_cold:
                    warned_cold = True
                    logger.warning("stopping pool at once; unfinished tasks will run again on another worker")
                for slot in (self.slots + self._retiring):
                    if slot.process is not None and slot.process.is_alive():
                        os.kill(slot.process.pid, signal.SIGKILL)
                if self.options.pool != "process":
                    break  # threads cannot be killed; the lease release below gives their messages back
            time.sleep(0.02)
            if time.monotonic() - self._last_beat >= self.options.heartbeat_interval:
                try:
                    self.heartbeat()
                except OperationalError:
                    pass
        for slot in (self.slots + self._retiring):
            if slot.process is not None:
                slot.process.join(1)
        try:
            if not self.app.broker.tracks_workers:
                self.app.backend.worker_heartbeat(self.worker_id, 0, None)
            released = self.app.broker.unregister(self.worker_id)
            if released:
                logger.warning("gave back %d unfinished message(s) to the queue", released)
        except OperationalError as exc:
            logger.error("could not release this worker's messages (%s); they return once its lease "
                         "expires in %.0fs", exc, self.options.lease_timeout)
        signals.worker_shutdown.send(sender=self)
        if self.events.enabled:
            self._worker_event("worker-offline")
            self.events.close()
        self._close_quietly()
        logger.info("%s stopped.", self.options.hostname)

    @staticmethod
    def _alive(slot: PoolSlot) -> bool:
        if slot.process is not None:
            return bool(slot.process.is_alive())
        return slot.thread is not None and slot.thread.is_alive()


def _die_with_parent(supervisor_pid: int) -> None:
    """A child must not outlive a SIGKILLed supervisor: its lease stops, its work goes elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != supervisor_pid:  # it died before prctl took effect
        os._exit(1)


def default_hostname() -> str:
    return socket.gethostname()
