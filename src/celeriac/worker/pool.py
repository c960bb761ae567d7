"""The pool slots of a worker: forked processes (`-P process`) or threads (`-P thread`).

The supervisor only asks the pool: start, grow, shrink, stop (warm), kill (cold), is this
slot alive, end the task it runs (revoke terminate=True), who is stuck past a hard limit.
Each kind answers in its own way; the supervisor never asks which kind it has.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import daemon, signals
from ..exceptions import OperationalError
from . import slotinfo, stacks
from .consumer import Consumer, PlainSlot
from .limits import ProcessLimiter, ThreadLimiter

if TYPE_CHECKING:
    from .supervisor import Worker

logger = logging.getLogger("celeriac.worker")

_PR_SET_PDEATHSIG = 1
# How long past a hard time limit the supervisor waits for the pool process's own watchdog
# before it kills the process itself (a task stuck in C code that holds the GIL).
HARD_LIMIT_GRACE = 2.0
RECYCLED_EXIT_CODE = 76  # a pool process that ended itself after --max-tasks/memory-per-child


class SharedSlot(ctypes.Structure):
    """Lives in shared memory: the child writes, the supervisor reads (no syscalls per task)."""

    _fields_ = [("ready", ctypes.c_int), ("tag", ctypes.c_char * 96), ("started", ctypes.c_double),
                ("async_running", ctypes.c_int), ("hard_deadline", ctypes.c_double),
                ("task_id", ctypes.c_char * 64), ("task_name", ctypes.c_char * 128),
                ("thread_ident", ctypes.c_ulonglong), ("processed", ctypes.c_long),
                ("events_dropped", ctypes.c_long), ("info", ctypes.c_char * slotinfo.INFO_SIZE),
                ("totals", ctypes.c_char * slotinfo.TOTALS_SIZE), ("totals_seq", ctypes.c_long)]


@dataclass
class PoolSlot:
    index: int
    generation: int
    owner: str  # who holds its leased messages at the broker: "<worker id>/<index>.<generation>"
    slot: Any  # SharedSlot or PlainSlot: what it says about the task it runs
    process: Any = None  # multiprocessing.Process for the process pool
    thread: threading.Thread | None = None
    consumer: Consumer | None = None  # a pool thread's consumer (a process keeps its own)


class Pool:
    """The slots in service (`slots`) and those finishing their last task (`retiring`)."""

    kind = ""
    can_kill = False  # a cold stop can end a slot that does not stop by itself

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker
        self.slots: list[PoolSlot] = []
        self.retiring: list[PoolSlot] = []
        self._retired_processed = 0
        self._retired_totals: dict[str, int] = {}

    # --- what each kind does its own way ---

    def _start(self, index: int, owner: str) -> PoolSlot:
        raise NotImplementedError

    def stop(self, slot: PoolSlot) -> None:
        """Warm: finish the running task, give the prefetched messages back, end."""
        raise NotImplementedError

    def kill(self, slot: PoolSlot) -> None:
        """Cold: end it now (its messages go back with the worker's lease)."""

    def alive(self, slot: PoolSlot) -> bool:
        raise NotImplementedError

    def terminate_task(self, slot: PoolSlot, task_id: str, sig: str) -> None:
        """revoke(terminate=True) of the task this slot runs now."""
        raise NotImplementedError

    def pid(self, slot: PoolSlot) -> int:
        return os.getpid()

    def exitcode(self, slot: PoolSlot) -> int | None:
        return None

    def describe(self, slot: PoolSlot) -> str:
        return f"{self.kind} {slot.index}"

    def killed_by_revoke(self, slot: PoolSlot) -> bool:
        return False

    def kill_stuck(self) -> None:
        """End slots stuck past a hard time limit their own watchdog did not enforce."""

    def wait(self, timeout: float, wakeup: threading.Event) -> None:
        """Until a slot ends, stop() is asked for, or `timeout` seconds pass."""
        wakeup.wait(timeout)

    def prepare(self) -> None:
        """Called once before the first slots start."""

    def join(self) -> None:
        """After a stop: wait a moment for the slots to be gone."""

    # --- the same for every kind ---

    def start(self, concurrency: int) -> None:
        self.prepare()
        self.slots = [self.start_slot(i, 0) for i in range(concurrency)]

    def start_slot(self, index: int, generation: int) -> PoolSlot:
        slot = self._start(index, f"{self.worker.worker_id}/{index}.{generation}")
        slot.generation = generation
        return slot

    def replace(self, position: int) -> None:
        """A fresh slot in place of one that ended (a new owner: the old one's lease is gone)."""
        old = self.slots[position]
        self.slots[position] = self.start_slot(old.index, old.generation + 1)

    def everyone(self) -> list[PoolSlot]:
        return self.slots + self.retiring

    def grow(self, n: int) -> int:
        for _ in range(max(0, n)):
            index = max([s.index for s in self.everyone()] + [-1]) + 1
            self.slots.append(self.start_slot(index, 0))
        return len(self.slots)

    def shrink(self, n: int) -> int:
        """Warm-stop the newest slots (never the last one): they finish their task and give back the rest."""
        for _ in range(max(0, min(n, len(self.slots) - 1))):
            slot = self.slots.pop()
            self.retiring.append(slot)
            self.stop(slot)
        return len(self.slots)

    def retired(self) -> list[PoolSlot]:
        """Retiring slots that have ended (their counts kept), out of the pool."""
        ended = [slot for slot in self.retiring if not self.alive(slot)]
        for slot in ended:
            self.retiring.remove(slot)
            self.keep_counts(slot)
        return ended

    def give_back(self, slot: PoolSlot, running: str | None, keep_all_counts: bool = False) -> int:
        """The messages an ended slot still held go back to the queue (`running`: the one it was
        running, whose delivery count stands); retried while the broker is unreachable."""
        for attempt in range(50):
            try:
                return self.worker.app.broker.requeue_owner(slot.owner, running, keep_all_counts)
            except OperationalError as exc:
                logger.warning("cannot give back messages of %s yet: %s", slot.owner, exc)
                time.sleep(min(5.0, 0.1 * (attempt + 1)))
        return 0

    def keep_counts(self, slot: PoolSlot) -> None:
        """A slot that ended keeps counting in the worker's totals."""
        self._retired_processed += int(slot.slot.processed)
        slotinfo.merge_totals(self._retired_totals, slotinfo.read_totals(slot.slot) or {})

    def processed_total(self) -> int:
        return self._retired_processed + sum(int(s.slot.processed) for s in self.slots)

    def totals_by_name(self) -> dict[str, int]:
        """Finished tasks by name, over every pool slot this worker has had."""
        totals = dict(self._retired_totals)
        for slot in self.everyone():
            slotinfo.merge_totals(totals, slotinfo.read_totals(slot.slot) or {})
        return totals

    def busy(self) -> int:
        return sum(1 for s in self.slots if bytes(s.slot.task_id) or s.slot.async_running)

    def pids(self) -> list[int]:
        """The pool's own processes (none for threads, which live in the worker's process)."""
        return []

    def any_alive(self) -> bool:
        return any(self.alive(s) for s in self.everyone())


class ProcessPool(Pool):
    kind = "process"
    can_kill = True

    def __init__(self, worker: "Worker") -> None:
        super().__init__(worker)
        self._ctx = multiprocessing.get_context("fork")
        self._revoke_killed: set[int] = set()  # pids killed by revoke(terminate=True, signal="SIGKILL")

    def prepare(self) -> None:
        # Everything imported so far is shared copy-on-write with the children; keep the
        # cyclic GC from touching (and so copying) those pages in each child.
        gc.freeze()

    def _start(self, index: int, owner: str) -> PoolSlot:
        shared = self._ctx.RawValue(SharedSlot)
        signals.worker_before_create_process.send(sender=self.worker)
        process = self._ctx.Process(target=self._child_main, args=(owner, shared, index + 1),
                                    name=f"ForkPoolWorker-{index + 1}", daemon=False)
        process.start()
        return PoolSlot(index, 0, owner, shared, process=process)

    def _child_main(self, owner: str, shared: Any, number: int) -> None:
        _die_with_parent(self.worker.pid)
        daemon.logfile_in_pool_process(number)  # --logfile with %I: a file of its own
        consumer = self.worker.make_consumer(owner, shared)
        consumer.limiter = ProcessLimiter(consumer.on_hard_limit)
        _child_signals(consumer)
        stacks.install_in_pool_process()
        signals.worker_process_init.send(sender=None)
        options = self.worker.options
        limits = (options.max_tasks_per_child, options.max_memory_per_child)
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
            self.worker.close_quietly()
        if consumer.recycled:
            logger.info("pool process %s is replaced %s", os.getpid(), consumer.recycled)
            os._exit(RECYCLED_EXIT_CODE)
        os._exit(0)

    def stop(self, slot: PoolSlot) -> None:
        if slot.process.is_alive():
            os.kill(slot.process.pid, signal.SIGTERM)

    def kill(self, slot: PoolSlot) -> None:
        if slot.process.is_alive():
            os.kill(slot.process.pid, signal.SIGKILL)

    def alive(self, slot: PoolSlot) -> bool:
        return bool(slot.process.is_alive())

    def pid(self, slot: PoolSlot) -> int:
        return int(slot.process.pid)

    def pids(self) -> list[int]:
        return [int(s.process.pid) for s in self.slots]

    def exitcode(self, slot: PoolSlot) -> int | None:
        return slot.process.exitcode  # type: ignore[no-any-return]

    def describe(self, slot: PoolSlot) -> str:
        return f"process {slot.process.pid}"

    def terminate_task(self, slot: PoolSlot, task_id: str, sig: str) -> None:
        if not slot.process.is_alive():
            return
        if sig == "SIGKILL":
            logger.warning("revoke: killing pool process %s running task %s", slot.process.pid, task_id)
            self._revoke_killed.add(slot.process.pid)
            os.kill(slot.process.pid, signal.SIGKILL)
        else:
            logger.warning("revoke: terminating task %s in pool process %s", task_id, slot.process.pid)
            os.kill(slot.process.pid, signal.SIGUSR1)

    def killed_by_revoke(self, slot: PoolSlot) -> bool:
        if slot.process.pid in self._revoke_killed:
            self._revoke_killed.discard(slot.process.pid)
            return True
        return False

    def kill_stuck(self) -> None:
        now = time.time()
        for slot in self.slots:
            deadline = slot.slot.hard_deadline
            if deadline and now > deadline + HARD_LIMIT_GRACE and slot.process.is_alive():
                logger.error("pool process %s is %.1fs past the hard time limit of message %s and did not end "
                             "itself (stuck in code that holds the GIL?); killing it", slot.process.pid,
                             now - deadline, bytes(slot.slot.tag).decode())
                slot.slot.hard_deadline = 0.0
                os.kill(slot.process.pid, signal.SIGKILL)

    def wait(self, timeout: float, wakeup: threading.Event) -> None:
        sentinels = [s.process.sentinel for s in self.slots]
        if sentinels:
            multiprocessing.connection.wait(sentinels, timeout=timeout)
        else:
            wakeup.wait(timeout)

    def join(self) -> None:
        for slot in self.everyone():
            slot.process.join(1)


class ThreadPool(Pool):
    kind = "thread"

    def prepare(self) -> None:
        limited = sorted(t.name for t in self.worker.app.tasks.values() if t.time_limit)
        if self.worker.app.conf.task_time_limit or limited:
            logger.warning(
                "hard time limits are not enforced in the thread pool (a thread cannot be ended): %s will "
                "run past their time_limit; soft limits still apply. Use the process pool (-P process) to "
                "enforce them.", ", ".join(limited) if limited else "all tasks")

    def _start(self, index: int, owner: str) -> PoolSlot:
        plain = PlainSlot()
        consumer = self.worker.make_consumer(owner, plain)
        consumer.limiter = ThreadLimiter()
        thread = threading.Thread(target=_thread_main, args=(consumer,), name=f"ThreadPoolWorker-{index + 1}",
                                  daemon=True)
        thread.start()
        return PoolSlot(index, 0, owner, plain, thread=thread, consumer=consumer)

    def stop(self, slot: PoolSlot) -> None:
        assert slot.consumer is not None
        slot.consumer.stop()

    def alive(self, slot: PoolSlot) -> bool:
        return slot.thread is not None and slot.thread.is_alive()

    def terminate_task(self, slot: PoolSlot, task_id: str, sig: str) -> None:
        assert slot.consumer is not None
        logger.warning("revoke: terminating task %s in pool thread %s (pure-Python code only)", task_id, slot.index)
        slot.consumer.limiter.terminate_thread(int(slot.slot.thread_ident), "terminated by revoke()")



def create_pool(worker: "Worker") -> Pool:
    return ProcessPool(worker) if worker.options.pool == "process" else ThreadPool(worker)


def _thread_main(consumer: Consumer) -> None:
    try:
        consumer.run()
    except Exception:
        logger.exception("pool thread %s stopped by an internal error", threading.current_thread().name)


def _child_signals(consumer: Consumer) -> None:
    signal.signal(signal.SIGTERM, lambda *_: consumer.stop())
    # revoke(terminate=True): the supervisor asks the running task to end.
    signal.signal(signal.SIGUSR1, lambda *_: consumer.limiter.terminate("terminated by revoke()"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the supervisor decides
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def _die_with_parent(supervisor_pid: int) -> None:
    """A child must not outlive a SIGKILLed supervisor: its lease stops, its work goes elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != supervisor_pid:  # it died before prctl took effect
        os._exit(1)
