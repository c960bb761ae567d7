"""`async def` tasks: one event loop per pool slot runs many of them at once.

The consumer thread fetches and hands async tasks to the loop; the loop thread writes
their outcomes itself (in batches), so a busy or idle consumer never delays them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING

from ..execution import trace_async
from .outcomes import Ran

if TYPE_CHECKING:
    from .batch import Batch
    from .consumer import Consumer
    from .job import Job

logger = logging.getLogger("celeriac.worker")


class AsyncRunner:
    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._slots = threading.BoundedSemaphore(self.limit)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._batch: "Batch | None" = None
        self._flush_scheduled = False
        self.consumer: "Consumer | None" = None
        self.in_flight = 0
        self._idle = threading.Condition()

    def bind(self, consumer: "Consumer") -> None:
        self.consumer = consumer

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            from .batch import Batch
            assert self.consumer is not None
            self._batch = Batch(self.consumer.app)
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="celeriac-asyncio", daemon=True)
            self._thread.start()
        return self._loop

    def submit(self, job: "Job", limits: tuple[float | None, float | None] = (None, None)) -> None:
        """Start the task on the loop; blocks while `limit` async tasks are already running."""
        loop = self._ensure_loop()
        self._slots.acquire()
        with self._idle:
            self.in_flight += 1
            if self.consumer is not None:
                self.consumer.slot.async_running = self.in_flight
        asyncio.run_coroutine_threadsafe(self._run(job, limits), loop)

    async def _run(self, job: "Job", limits: tuple[float | None, float | None]) -> None:
        task, request = job.task, job.request
        assert task is not None and request is not None
        started = time.perf_counter()
        try:
            outcome = await trace_async(task, request, request.args, request.kwargs, limits)
            assert self.consumer is not None and self._batch is not None
            self.consumer.finish(job, Ran(outcome, time.perf_counter() - started), self._batch)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
        except Exception:
            logger.exception("internal error finishing async task %s[%s]", task.name, request.id)
        finally:
            self._slots.release()
            with self._idle:
                self.in_flight -= 1
                if self.consumer is not None:
                    self.consumer.slot.async_running = self.in_flight
                self._idle.notify_all()

    def _flush(self) -> None:
        # Outcomes of every task that finished in this loop iteration go out together.
        self._flush_scheduled = False
        assert self._batch is not None
        try:
            self._batch.flush()
        except Exception:
            logger.exception("could not write async task outcomes; their messages will be redelivered")

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for running async tasks (warm shutdown); True when none is left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self.in_flight:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        if self._loop is not None:
            done = threading.Event()

            def flush_and_signal() -> None:
                self._flush()
                done.set()

            self._loop.call_soon_threadsafe(flush_and_signal)
            done.wait(5)
        return True
