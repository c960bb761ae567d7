"""Helpers for your own tests.

    from celeriac.testing import start_worker

    app = Celeriac("t", broker="memory://t", backend="memory://t")

    def test_add():
        with start_worker(app):
            assert add.delay(2, 3).get(timeout=5) == 5

The worker runs in threads of this process (the memory broker lives in this process), with
the same consumer code as `celeriac worker`.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Sequence

from .worker.supervisor import Worker, WorkerOptions, default_hostname

if TYPE_CHECKING:
    from .app import Celeriac


@contextmanager
def start_worker(app: "Celeriac", concurrency: int = 1, queues: Sequence[str] | None = None,
                 hostname: str | None = None, ready_timeout: float = 10.0) -> Iterator[Worker]:
    """Run a thread-pool worker for the duration of the block; it stops (warm) on exit."""
    options = WorkerOptions(
        concurrency=concurrency, pool="thread", queues=list(queues or [app.conf.task_default_queue]),
        hostname=hostname or f"testworker@{default_hostname()}", prefetch_multiplier=1, shutdown_timeout=10.0,
        heartbeat_interval=float(app.conf.worker_heartbeat_interval),
        lease_timeout=float(app.conf.worker_lease_timeout))
    worker = Worker(app, options, install_signal_handlers=False)
    thread = threading.Thread(target=worker.run, name="celeriac-test-worker", daemon=True)
    thread.start()
    if not worker.ready.wait(ready_timeout):
        worker.stop()
        raise RuntimeError(f"test worker not ready within {ready_timeout}s")
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(30)
