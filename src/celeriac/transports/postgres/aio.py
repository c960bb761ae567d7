"""The asyncio client for PostgreSQL (psycopg's AsyncConnection): the same statements as
the synchronous broker and result store, which it wraps.

Publishing: the calls of one pass of the event loop go out together, in one transaction
(one insert per table, one NOTIFY per queue). Waiting: one connection of this loop LISTENs
on the results channel; the worker NOTIFYs the ids that finished, and one read per pass
looks up every awaited id that was named (100 per SELECT). A waiter also re-reads its own
state at least every second, in case a notification was lost while reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Sequence

import psycopg

from ... import states
from .results import PostgresResultStore
from ...brokers.base import Outgoing
from .broker import COPY_TYPES, PostgresBroker, copy_plan, publish_statement
from ...aio.base import AsyncResultStore, BatchingBroker

_RECHECK = 1.0  # seconds: a waiter re-reads its own state at least this often
_CHUNK = 100  # task ids per read while checking


class _Connection:
    """One AsyncConnection of this loop, used by one coroutine at a time, opened again after a failure."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self.lock = asyncio.Lock()

    async def get(self) -> "psycopg.AsyncConnection[Any]":
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.db.ensure_schema()  # once per process: the tables exist before the first statement
            try:
                self.conn = await psycopg.AsyncConnection.connect(self.db.conninfo, autocommit=True,
                                                                  connect_timeout=10)
            except psycopg.Error as exc:
                raise self.db.error(exc) from exc
        return self.conn

    def failed(self, exc: psycopg.Error) -> Exception:
        if self.conn is not None and (self.conn.broken or isinstance(exc, psycopg.OperationalError)):
            self.conn = None
        error: Exception = self.db.error(exc)
        return error

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()
            self.conn = None


class AsyncPostgresBroker(BatchingBroker):
    sync: PostgresBroker

    def __init__(self, sync: PostgresBroker) -> None:
        super().__init__(sync)
        self._conn = _Connection(sync.db)

    async def publish_batch(self, messages: Sequence[Outgoing]) -> None:
        async with self._conn.lock:
            try:
                conn = await self._conn.get()
                plan = copy_plan(self.sync.s, messages)
                if plan is None:
                    await conn.execute(*publish_statement(self.sync.s, messages))
                    return
                statement, rows, notify = plan
                async with conn.transaction():
                    async with conn.cursor().copy(statement) as copy:
                        copy.set_types(COPY_TYPES)
                        for row in rows:
                            await copy.write_row(row)
                    await conn.execute(*notify)
            except psycopg.Error as exc:
                raise self._conn.failed(exc) from exc

    async def close(self) -> None:
        await self._conn.close()


class AsyncPostgresResultStore(AsyncResultStore):
    sync: PostgresResultStore

    def __init__(self, sync: PostgresResultStore) -> None:
        super().__init__(sync)
        self._conn = _Connection(sync.db)
        self._waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self._pending: set[str] = set()
        self._checker: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    async def get_many(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not task_ids:
            return {}
        async with self._conn.lock:
            try:
                conn = await self._conn.get()
                cur = await conn.execute(
                    f"SELECT task_id, meta FROM {self.sync.s}.results WHERE task_id = ANY(%s) "
                    "AND (expires IS NULL OR expires >= %s)", (list(task_ids), time.time()))
                rows = await cur.fetchall()
            except psycopg.Error as exc:
                raise self._conn.failed(exc) from exc
        return {str(t): self.sync.decode(bytes(m)) for t, m in rows}

    # --- waiting ---

    async def _listen(self) -> None:
        db = self.sync.db
        backoff = 0.1
        while True:
            conn = None
            try:
                conn = await psycopg.AsyncConnection.connect(db.conninfo, autocommit=True, connect_timeout=10)
                await conn.execute(f"LISTEN {db.channel('r')}")
                backoff = 0.1
                self._listening.set()
                self._check(list(self._waiters))  # whatever finished while we were not listening
                async for note in conn.notifies():
                    named = [t for t in note.payload.split(" ") if t in self._waiters]
                    if named:
                        self._check(named)
            except psycopg.Error:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()

    def _check(self, task_ids: Sequence[str]) -> None:
        """Look these ids up soon: one read for all the ids named in this pass of the loop."""
        self._pending.update(task_ids)
        if self._pending and (self._checker is None or self._checker.done()):
            self._checker = asyncio.get_running_loop().create_task(self._run_checks())

    async def _run_checks(self) -> None:
        await asyncio.sleep(0)  # the waits and notifications of this pass join the first look
        while self._pending:
            ids = [t for t in list(self._pending)[:_CHUNK]]
            self._pending.difference_update(ids)
            try:
                found = await self.get_many(ids)
            except Exception:  # noqa: BLE001 - the waiters re-check by themselves (_RECHECK)
                return
            for task_id, meta in found.items():
                if meta.get("status") in states.READY_STATES:
                    for future in self._waiters.pop(task_id, []):
                        if not future.done():
                            future.set_result(meta)

    async def wait(self, task_id: str, timeout: float) -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        if self._listener is None or self._listener.done():
            self._listener = loop.create_task(self._listen())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), 1.0)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return await self.get(task_id)
            future: asyncio.Future[dict[str, Any]] = loop.create_future()
            self._waiters.setdefault(task_id, []).append(future)
            self._check([task_id])
            try:
                return await asyncio.wait_for(asyncio.shield(future), min(remaining, _RECHECK))
            except TimeoutError:
                pass
            finally:
                waiting = self._waiters.get(task_id)
                if waiting and future in waiting:
                    waiting.remove(future)
                    if not waiting:
                        del self._waiters[task_id]

    async def close(self) -> None:
        for task in (self._checker, self._listener):
            if task is not None:
                task.cancel()
        await self._conn.close()
