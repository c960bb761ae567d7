"""Helpers for your own tests.

    from celeriac.testing import start_worker

    app = Celeriac("t", broker="memory://t", backend="memory://t")

    def test_add():
        with start_worker(app):
            assert add.delay(2, 3).get(timeout=5) == 5

The worker runs in threads of this process (the memory broker lives in this process), with
the same consumer code as `celeriac worker`. It starts in milliseconds, answers a ping
before the block begins, and stops within a fraction of a second when it ends. The pytest
fixtures built on it live in `celeriac.contrib.pytest`.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from .worker.consumer import Consumer
from .worker.supervisor import Worker, WorkerOptions, default_hostname

if TYPE_CHECKING:
    from .app import Celeriac

#: The task the test worker answers to prove it consumes (Celery's name, so Celery tests keep it).
PING_TASK = "celery.ping"

# Pools that run in this process. Celery's default for test workers is "solo" (one task at a
# time); here that is one thread. Process pools need a separate `celeriac worker`.
_IN_PROCESS_POOLS = ("solo", "thread", "threads")

# Celery worker options that change nothing in an in-process test worker (no heartbeats or
# gossip to turn off here); accepted so Celery test suites run unchanged.
_HARMLESS_OPTIONS = frozenset({"loglevel", "logfile", "without_heartbeat", "without_mingle", "without_gossip"})


def _pong() -> str:
    return "pong"


def ensure_ping_task(app: "Celeriac") -> None:
    """Register `celery.ping` (returns "pong") on `app` unless it has one already."""
    if PING_TASK not in app.tasks:
        app._create_task(_pong, {"name": PING_TASK})


class TestWorker(Worker):
    """The worker of `start_worker`: short fetches, so that stopping takes milliseconds."""

    __test__ = False  # not a test class, whatever pytest's name patterns say

    def make_consumer(self, owner: str, slot: Any) -> Consumer:
        consumer = super().make_consumer(owner, slot)
        consumer.fetch_timeout = 0.05
        return consumer

    def reload(self, modules: Iterable[str] | None = None, reload: bool = False, reloader: Any = None) -> None:
        """Celery's `celery_worker.reload()`: import `modules` (tasks defined on the app after the
        worker started need nothing: the worker looks tasks up by name for every message)."""
        import importlib
        for module in modules or ():
            importlib.import_module(module)

    def running_tasks(self) -> list[str]:
        """`name[id]` of the tasks the pool threads are running now."""
        return [f"{bytes(s.slot.task_name).decode()}[{bytes(s.slot.task_id).decode()}]"
                for s in self.slots if s.slot.task_id]


def _worker_options(app: "Celeriac", concurrency: int, pool: str, queues: Sequence[str] | None,
                    hostname: str | None, shutdown_timeout: float) -> WorkerOptions:
    if pool not in _IN_PROCESS_POOLS:
        raise ValueError(f"the in-process test worker runs tasks in threads of this process; pool={pool!r} is "
                         f"not possible here (use one of {', '.join(_IN_PROCESS_POOLS)}, or start a separate "
                         f"`celeriac worker` process for a process pool)")
    return WorkerOptions(
        concurrency=1 if pool == "solo" else concurrency, pool="thread",
        queues=list(queues or [app.conf.task_default_queue]),
        hostname=hostname or f"testworker@{default_hostname()}", prefetch_multiplier=1,
        shutdown_timeout=shutdown_timeout, heartbeat_interval=float(app.conf.worker_heartbeat_interval),
        lease_timeout=float(app.conf.worker_lease_timeout))


def _wait_until_ready(worker: TestWorker, thread: threading.Thread, outcome: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not worker.ready.wait(0.01):
        if not thread.is_alive():
            code = outcome[0] if outcome else None
            raise RuntimeError(f"the test worker stopped before it was ready (exit status {code}): "
                               f"cannot reach the broker at {worker.app.broker.safe_url}? See the log above.")
        if time.monotonic() > deadline:
            worker.stop()
            raise RuntimeError(f"the test worker was not ready within {timeout}s "
                               f"(broker {worker.app.broker.safe_url})")


def _ping(app: "Celeriac", queue: str, timeout: float) -> None:
    result = app.send_task(PING_TASK, queue=queue, ignore_result=False)
    try:
        answer = result.get(timeout=timeout, disable_sync_subtasks=False)
    except Exception as exc:
        raise RuntimeError(f"the test worker did not answer a ping on queue {queue!r} within {timeout}s: "
                           f"{type(exc).__name__}: {exc}") from exc
    if answer != "pong":
        raise RuntimeError(f"the test worker's {PING_TASK} task answered {answer!r}, not 'pong': "
                           f"another task is registered under that name")
    result.forget()


@contextmanager
def start_worker(app: "Celeriac", concurrency: int = 1, queues: Sequence[str] | None = None,
                 hostname: str | None = None, ready_timeout: float = 10.0, *, pool: str = "thread",
                 perform_ping_check: bool = True, ping_task_timeout: float = 10.0,
                 shutdown_timeout: float = 10.0, **celery_options: Any) -> Iterator[TestWorker]:
    """Run a thread-pool worker for the duration of the block; it stops (warm) on exit.

    The arguments follow Celery's `celery.contrib.testing.worker.start_worker`. The worker
    registers its own `celery.ping` task and, with `perform_ping_check`, runs it once before
    the block starts. A task still running `shutdown_timeout` seconds after the block ended
    is abandoned (its thread cannot be killed, and never keeps the interpreter from exiting)
    and reported as a RuntimeError naming it.
    """
    unknown = sorted(set(celery_options) - _HARMLESS_OPTIONS)
    if unknown:
        raise TypeError(f"start_worker() does not support {', '.join(unknown)} (supported: concurrency, "
                        f"pool, queues, hostname, shutdown_timeout, perform_ping_check, ping_task_timeout)")
    options = _worker_options(app, concurrency, pool, queues, hostname, shutdown_timeout)
    ensure_ping_task(app)
    worker = TestWorker(app, options, install_signal_handlers=False)
    outcome: list[int] = []
    thread = threading.Thread(target=lambda: outcome.append(worker.run()), name="celeriac-test-worker",
                              daemon=True)  # daemon: nothing a test leaves running keeps pytest from exiting
    thread.start()
    try:
        _wait_until_ready(worker, thread, outcome, ready_timeout)
        if perform_ping_check:
            _ping(app, options.queues[0], ping_task_timeout)
    except BaseException:
        worker.stop()
        thread.join(shutdown_timeout + 5)
        raise
    try:
        yield worker
    finally:
        _stop(worker, thread, shutdown_timeout)


def _stop(worker: TestWorker, thread: threading.Thread, shutdown_timeout: float) -> None:
    worker.stop()
    thread.join(shutdown_timeout + 5)
    stuck = [slot for slot in worker.slots if slot.thread is not None and slot.thread.is_alive()]
    if stuck:
        names = ", ".join(worker.running_tasks()) or "a task"
        raise RuntimeError(f"the test worker stopped, but {names} was still running {shutdown_timeout}s later "
                           f"and is abandoned; raise shutdown_timeout (celery_worker_parameters) if your "
                           f"tasks take longer")
