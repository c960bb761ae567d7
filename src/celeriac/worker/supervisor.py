"""The worker's main process: starts the pool, keeps the lease alive, replaces dead slots.

It runs no task itself, so its heartbeat never waits behind a slow task: a worker's
messages are given back only when this process is gone (SIGKILL, crash), or at once for
one slot when that slot dies. What a process or a thread pool does its own way is in
pool.py; autoscaling beside it, in autoscale.py.
"""

from __future__ import annotations

import dataclasses
import logging
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
from .autoscale import Autoscaler
from .consumer import Consumer
from .limits import HARD_LIMIT_EXIT_CODE
from .pool import RECYCLED_EXIT_CODE, PoolSlot, create_pool
from .remote import ProcessControl, SupervisorControl
from .revocations import Revocations
from . import stacks

if TYPE_CHECKING:
    from ..app import Celeriac

logger = logging.getLogger("celeriac.worker")
OUTAGE_RETRY = 0.25  # seconds between two tries of the heartbeat while the broker or store does not answer


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
    heartbeat_events: bool = True  # `--without-heartbeat` turns off worker-heartbeat events (not liveness)


class Worker:
    def __init__(self, app: "Celeriac", options: WorkerOptions, install_signal_handlers: bool = True) -> None:
        self.app = app
        self.install_signal_handlers = install_signal_handlers
        self.ready = threading.Event()
        self._wakeup = threading.Event()  # set by stop(): the supervisor loop need not finish its nap
        self.options = options
        self.worker_id = f"{options.hostname}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # unique even for equal -n
        self.pid = os.getpid()
        self.pool = create_pool(self)
        self.autoscaler = Autoscaler(app, self.pool, options)
        self._stop_requested = 0
        self._last_beat = 0.0
        self._last_cleanup = time.monotonic()
        self._outage_since: float | None = None  # monotonic: when the broker or store stopped answering
        self._retry_at = 0.0
        self.revocations = Revocations(app, interval=0.0)  # read on every tick (at most every 0.5 s)
        self.control = SupervisorControl(self)
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

    @property
    def slots(self) -> list[PoolSlot]:
        """The pool slots in service (not those retiring)."""
        return self.pool.slots

    def make_consumer(self, owner: str, slot: Any) -> Consumer:
        """The consumer loop of one pool slot (in its process or thread)."""
        runner = AsyncRunner(int(self.app.conf.worker_async_concurrency or 100))
        consumer = Consumer(self.app, worker_id=self.worker_id, owner=owner, queues=list(self.options.queues),
                            prefetch=self.options.prefetch_multiplier, hostname=self.options.hostname,
                            slot=slot, async_runner=runner, events=self.events if self.events.enabled else None)
        consumer.remote = ProcessControl(consumer, self.control.cursor,
                                         float(self.app.conf.worker_revoke_sync_interval))
        runner.bind(consumer)
        return consumer

    def close_quietly(self) -> None:
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
        since = time.monotonic() - self._last_beat
        if self._last_beat and since > self.options.lease_timeout / 2:
            # Past the lease, other workers count this one dead and hand out what it holds.
            logger.warning("the lease was renewed %.1fs after the last renewal (lease %.1fs, interval %.1fs): this "
                           "worker's main loop or machine stalled", since, self.options.lease_timeout,
                           self.options.heartbeat_interval)
        info = {"hostname": self.options.hostname, "pid": os.getpid(), "pool": self.options.pool,
                "concurrency": self.options.concurrency, "queues": self.options.queues,
                **self._activity()}
        self.app.capabilities.heartbeat(self.worker_id, self.options.lease_timeout, info)
        self._last_beat = time.monotonic()
        if signals.heartbeat_sent.receivers:
            signals.heartbeat_sent.send(sender=self)
        if self.events.enabled and self.options.heartbeat_events:
            self.worker_event("worker-heartbeat")

    def _activity(self) -> dict[str, Any]:
        """What the dashboard shows of this worker (read from the slots' shared memory)."""
        slots = self.pool.everyone()
        running = [{"id": s.slot.task_id.decode(errors="replace"), "name": s.slot.task_name.decode(errors="replace"),
                    "started": float(s.slot.started)} for s in slots if s.slot.task_id]
        async_running = sum(int(s.slot.async_running) for s in slots)
        return {"active": len(running) + async_running, "running": running,
                "processed": self.pool.processed_total(), "heartbeat_at": time.time()}

    def worker_event(self, kind: str) -> None:
        from ..events import worker_fields
        slots = self.pool.everyone()
        active = sum(1 for s in slots if s.slot.tag) + sum(int(s.slot.async_running) for s in slots)
        dropped = self.events.dropped + sum(int(s.slot.events_dropped) for s in slots)
        self.events.send(kind, active=active, processed=self.pool.processed_total(), events_dropped=dropped,
                         **worker_fields(self.options.heartbeat_interval))

    def run(self) -> int:
        if self.install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                signal.signal(sig, self._request_stop)
            stacks.install_in_supervisor(self.pool.pids)
        try:
            self.heartbeat()  # the lease exists before any slot claims a message
            self.app.broker.upgrade_legacy_layout()  # an earlier version's queued messages, before any fetch
            self.app.backend.upgrade_legacy_layout()
            self._recover()
        except OperationalError as exc:
            logger.error("cannot reach the broker at %s: %s", self.app.broker.safe_url, exc)
            return 1
        signals.worker_init.send(sender=self)
        self.control.start()
        signals.celeryd_after_setup.send(sender=self.options.hostname, instance=self, conf=self.app.conf)
        self.pool.start(self.options.concurrency)
        self._wait_ready()
        if self.options.beat:
            self._start_beat()
        if self.events.enabled:
            self.worker_event("worker-online")
        logger.info("%s ready.", self.options.hostname)
        self.ready.set()
        signals.worker_ready.send(sender=self)
        try:
            while not self._stop_requested:
                self._tick()
        finally:
            self._shutdown()
        return 0

    def _recover(self) -> None:
        recovered = self.app.broker.recover()
        if recovered:
            logger.warning("gave back %d message(s) held by workers that died", recovered)

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stop_requested:
            if all(s.slot.ready for s in self.pool.slots):
                return
            self._reap()
            time.sleep(0.005)

    def _tick(self) -> None:
        wait = max(0.05, min(0.5, self.options.heartbeat_interval - (time.monotonic() - self._last_beat)))
        self.pool.wait(wait, self._wakeup)
        self._reap()
        for slot in self.pool.retired():
            self.pool.give_back(slot, None)  # normally nothing is left: it gave its messages back
        self.pool.kill_stuck()
        self._terminate_revoked()
        self.control.poll()
        self.autoscaler.tick()
        now = time.monotonic()
        if now < self._retry_at:
            return
        try:
            if self._housekeeping(now) and self._outage_since is not None:
                logger.warning("broker and result store answer again, after %.1fs", now - self._outage_since)
                self._outage_since = None
        except OperationalError as exc:
            # Said once per outage (then retried quietly every OUTAGE_RETRY seconds), not on every tick.
            if self._outage_since is None:
                self._outage_since = now
                logger.warning("broker or result store unreachable (%s); retrying every %.2gs until it answers",
                               exc, OUTAGE_RETRY)
            self._retry_at = now + OUTAGE_RETRY

    def _housekeeping(self, now: float) -> bool:
        """The heartbeat and clean-up that are due; whether any talked to the broker or store."""
        ran = False
        if now - self._last_beat >= self.options.heartbeat_interval:
            ran = True
            self.heartbeat()
            self._recover()
            self.app.broker.housekeeping()
        if now - self._last_cleanup >= self._cleanup_interval:
            ran = True
            self._last_cleanup = now
            removed = self.app.backend.cleanup()
            if removed:
                logger.info("removed %d expired result(s)", removed)
        return ran

    def _terminate_revoked(self) -> None:
        """End running tasks revoked with terminate=True (read from the durable store)."""
        for task_id, sig in self.revocations.refresh():
            if sig:
                self._to_terminate[task_id] = sig
        while len(self._to_terminate) > 10_000:  # tasks that ran elsewhere: forget the oldest
            self._to_terminate.pop(next(iter(self._to_terminate)))
        if not self._to_terminate:
            return
        for slot in self.pool.slots:
            running = bytes(slot.slot.task_id).decode()
            sig = self._to_terminate.pop(running, None) if running else None
            if sig is not None:
                self.pool.terminate_task(slot, running, sig)

    def _reap(self) -> None:
        """Slots that ended on their own: their messages go back, a fresh slot takes each place."""
        for position, slot in enumerate(self.pool.slots):
            if self.pool.alive(slot) or self._stop_requested:
                continue
            self.pool.keep_counts(slot)
            exitcode = self.pool.exitcode(slot)
            if exitcode == RECYCLED_EXIT_CODE:  # max tasks / memory per child
                self.pool.give_back(slot, None)
            elif exitcode == HARD_LIMIT_EXIT_CODE:  # it recorded and acked its task itself
                logger.warning("pool %s ended after a hard time limit; %d prefetched message(s) back on the "
                               "queue; starting a new one", self.pool.describe(slot), self.pool.give_back(slot, None))
            else:
                self._lost(slot, exitcode)
            self.pool.replace(position)

    def _lost(self, slot: PoolSlot, exitcode: int | None) -> None:
        running = bytes(slot.slot.tag).decode() or None
        # Which of several running async tasks killed the process is unknown: all keep their count.
        requeued = self.pool.give_back(slot, running, keep_all_counts=bool(slot.slot.async_running))
        if self.pool.killed_by_revoke(slot):
            logger.warning("pool %s killed by revoke(terminate=True, signal='SIGKILL'); %d message(s) back on "
                           "the queue (the revoked one is discarded when it comes back); starting a new one",
                           self.pool.describe(slot), requeued)
        else:
            logger.error("pool %s exited unexpectedly (exit code %s)%s; %d message(s) back on the queue; "
                         "starting a new one", self.pool.describe(slot), exitcode,
                         f" while running message {running}" if running else "", requeued)

    def _start_beat(self) -> None:
        # A thread, started after the pool is forked: the supervisor runs no task, so the
        # scheduler never waits behind one; a leased store keeps it single even with -B on
        # several workers.
        from ..beat import embedded_beat
        beat, thread = embedded_beat(self.app)
        signals.beat_embedded_init.send(sender=beat)
        thread.start()
        self._beat = (beat, thread)

    def _shutdown(self) -> None:
        if self._beat is not None:
            beat, thread = self._beat
            beat.stop()
            thread.join(5)
        signals.worker_shutting_down.send(sender=self, sig=getattr(self, "_stop_signal", "SIGTERM"),
                                          how="cold" if self._stop_requested > 1 else "warm", exitcode=0)
        self._stop_pool()
        try:
            self.app.capabilities.forget_worker(self.worker_id)
            released = self.app.broker.unregister(self.worker_id)
            if released:
                logger.warning("gave back %d unfinished message(s) to the queue", released)
        except OperationalError as exc:
            logger.error("could not release this worker's messages (%s); they return once its lease "
                         "expires in %.0fs", exc, self.options.lease_timeout)
        signals.worker_shutdown.send(sender=self)
        if self.events.enabled:
            self.worker_event("worker-offline")
            self.events.close()
        self.close_quietly()
        logger.info("%s stopped.", self.options.hostname)

    def _stop_pool(self) -> None:
        """Warm: every slot finishes its task; cold (asked twice, or past the shutdown timeout):
        what can be killed is, and the unfinished tasks run again elsewhere."""
        for slot in self.pool.everyone():
            self.pool.stop(slot)
        deadline = time.monotonic() + self.options.shutdown_timeout
        warned_cold = False
        while self.pool.any_alive():
            if self._stop_requested > 1 or time.monotonic() > deadline:
                if not warned_cold:
                    warned_cold = True
                    logger.warning("stopping pool at once; unfinished tasks will run again on another worker")
                for slot in self.pool.everyone():
                    self.pool.kill(slot)
                if not self.pool.can_kill:
                    break  # threads cannot be killed; the lease release gives their messages back
            time.sleep(0.02)
            if time.monotonic() - self._last_beat >= self.options.heartbeat_interval:
                try:
                    self.heartbeat()
                except OperationalError:
                    pass
        self.pool.join()


def default_hostname() -> str:
    return socket.gethostname()
