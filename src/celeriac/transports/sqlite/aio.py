"""The asyncio client for the embedded SQLite file.

Waiting never blocks the loop: the database's inotify descriptor (the Doorbell the
synchronous waiters poll) is registered with `loop.add_reader`; when the WAL is written,
one check reads the state of every task that any coroutine of this loop awaits (100 ids
per SELECT and per pass of the loop), and wakes those that finished. SQLite appends a commit's WAL frames just before it
publishes the commit, so a check waits (asynchronously, at most 50 ms) until
`PRAGMA data_version` shows a new commit. Without inotify (not Linux) it polls every 50 ms.

Reading runs inline on the loop's thread: short local reads (tens of microseconds) that
never wait in WAL mode. Publishing runs on one writer thread of the client (not a thread per
call): a write to a file is a system call the kernel may hold while other processes write
heavily (dirty-page throttling, a WAL checkpoint's fsync; seen: 15 ms in CI), and the loop
must not sit in it. A write needs the file's write lock, which workers take for their
claims, acks and results: the writer tries it without waiting and, while it is taken, the
batch sleeps on the loop (asyncio.sleep) and tries again, so the loop is never held by
another process's transaction.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from ... import states
from .database import _LOCK_TIMEOUT, Doorbell
from .results import SQLiteResultStore
from ...brokers.base import Outgoing
from .broker import SQLiteBroker
from ...exceptions import OperationalError
from ...aio.base import AsyncResultStore, BatchingBroker

_SETTLE = 0.05      # seconds a check waits for an announced commit to become visible
_POLL = 0.05        # seconds between checks without inotify
_RECHECK = 1.0      # seconds: a waiter re-reads its own state at least this often
_CHUNK = 100        # task ids per read while checking (one read per pass of the loop)


class AsyncSQLiteBroker(BatchingBroker):
    """Publishes a batch per transaction, on the client's writer thread (module docs). While
    another process holds the write lock, the batch waits on the loop (asyncio.sleep) and
    tries again; nothing sleeps on the loop's thread."""

    sync: SQLiteBroker
    _writer: tuple[int, ThreadPoolExecutor] | None = None  # (pid, executor): a forked child makes its own

    def _writer_thread(self) -> ThreadPoolExecutor:
        if self._writer is None or self._writer[0] != os.getpid():
            self._writer = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="celeriac-sqlite-write"))
        return self._writer[1]

    async def publish_batch(self, messages: Sequence[Outgoing]) -> None:
        loop = asyncio.get_running_loop()
        attempt = functools.partial(self.sync.db.try_write, lambda: self.sync.publish(messages))
        pause, deadline = 0.0002, time.monotonic() + _LOCK_TIMEOUT
        while not (await loop.run_in_executor(self._writer_thread(), attempt))[0]:
            if time.monotonic() > deadline:
                raise OperationalError(f"the SQLite database {self.sync.path} stayed locked for "
                                       f"{_LOCK_TIMEOUT:.0f}s; another process holds a write transaction open")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.005)


class AsyncSQLiteResultStore(AsyncResultStore):
    sync: SQLiteResultStore

    def __init__(self, sync: SQLiteResultStore) -> None:
        super().__init__(sync)
        self._bell = Doorbell(sync.path)
        self._waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._check: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._dirty = False
        self._seen: int | None = None
        self._settle = False

    async def get_many(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self.sync.get_many(task_ids)

    def _version(self) -> int:
        return int(self.sync.db.read(lambda c: c.execute("PRAGMA data_version").fetchone()[0]))

    def _watch(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            fd = self._bell.fileno()
            if fd is not None:
                self._loop.add_reader(fd, self._on_readable)
            else:
                self._poller = self._loop.create_task(self._poll())

    def _on_readable(self) -> None:
        if self._bell.drain() and self._waiters:
            self._kick(settle=True)

    def _kick(self, settle: bool) -> None:
        """Have the checker look again (settle: first wait until a new commit is visible)."""
        self._dirty = True
        self._settle = self._settle or settle
        if self._check is None or self._check.done():
            assert self._loop is not None
            self._check = self._loop.create_task(self._checker())

    async def _checker(self) -> None:
        await asyncio.sleep(0)  # the waits started in this pass join the first look
        while self._dirty:
            self._dirty = False
            if self._settle:
                self._settle = False
                await self._settled()
            await self._wake()

    async def _settled(self) -> None:
        settle_until = time.monotonic() + _SETTLE
        while self._version() == self._seen and time.monotonic() < settle_until:
            await asyncio.sleep(0.0005)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(_POLL)
            if self._waiters:
                self._kick(settle=False)

    async def _wake(self) -> None:
        """Read the state of every awaited task, _CHUNK ids per read and per pass of the
        loop; resolve those that are ready."""
        self._seen = self._version()  # a commit after this changes it: its event is not stale
        ids = list(self._waiters)
        for start in range(0, len(ids), _CHUNK):
            found = self.sync.get_many(ids[start:start + _CHUNK])
            for task_id, meta in found.items():
                if meta.get("status") in states.READY_STATES:
                    for future in self._waiters.pop(task_id, []):
                        if not future.done():
                            future.set_result(meta)
            if start + _CHUNK < len(ids):
                await asyncio.sleep(0)

    async def wait(self, task_id: str, timeout: float) -> dict[str, Any] | None:
        self._watch()
        assert self._loop is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self.sync.get(task_id)
            future: asyncio.Future[dict[str, Any]] = self._loop.create_future()
            self._waiters.setdefault(task_id, []).append(future)
            self._kick(settle=False)  # its first look: one read for all the waits started in this pass
            try:
                return await asyncio.wait_for(asyncio.shield(future), min(remaining, _RECHECK))
            except TimeoutError:
                pass
            finally:
                self._forget(task_id, future)

    def _forget(self, task_id: str, future: asyncio.Future[dict[str, Any]]) -> None:
        waiting = self._waiters.get(task_id)
        if waiting and future in waiting:
            waiting.remove(future)
            if not waiting:
                del self._waiters[task_id]

    async def close(self) -> None:
        if self._loop is not None and self._bell.fileno() is not None:
            self._loop.remove_reader(self._bell.fileno())  # type: ignore[arg-type]
        for task in (self._check, self._poller):
            if task is not None:
                task.cancel()
        self._bell.close()

    def abandon(self) -> None:
        self._bell.close()  # its reader went with the closed loop
