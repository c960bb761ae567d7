"""The asyncio client interfaces: one async broker (publish) and one async result store
(read, wait). Everything above them (`aapply_async`, `aget`, canvas) is written once;
only the modules under celeriac.aio that implement them know a transport.

Each implementation wraps the app's synchronous broker or store and reuses what it
knows - URL, options, key names, Lua scripts, AMQP routing - and talks over a native
asyncio client, so no call blocks the event loop or takes a thread.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from typing import Any, Sequence

from .. import states
from ..backends.base import ResultStore
from ..brokers.base import Broker, Outgoing


class AsyncBroker(ABC):
    """Publishes messages built by the shared (synchronous) message path."""

    def __init__(self, sync: Broker) -> None:
        self.sync = sync

    @abstractmethod
    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Store the messages durably: when this returns, the broker has all of them
        (raises OperationalError otherwise)."""

    async def close(self) -> None:
        """Close the asyncio connections (the sync broker is left alone)."""

    def abandon(self) -> None:
        """The loop is closed: drop what needs no loop to be released (optional)."""


class AsyncResultStore(ABC):
    """Reads and waits for results written by workers through the synchronous store."""

    def __init__(self, sync: ResultStore) -> None:
        self.sync = sync

    @abstractmethod
    async def get_many(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Decoded metas of the ids that have one (unknown ids are absent)."""

    async def get(self, task_id: str) -> dict[str, Any] | None:
        return (await self.get_many([task_id])).get(task_id)

    @abstractmethod
    async def wait(self, task_id: str, timeout: float) -> dict[str, Any] | None:
        """Until the task is ready or `timeout` passes; the latest meta (None: nothing stored)."""

    async def close(self) -> None:
        """Close the asyncio connections."""

    def abandon(self) -> None:
        """The loop is closed: drop what needs no loop to be released (optional)."""


class BatchingBroker(AsyncBroker):
    """Publishes the calls made in one pass of the event loop together, in one
    `publish_batch` (1,000 concurrent `adelay()` calls: a few round trips, not 1,000).
    Every caller of a batch returns when the whole batch is stored, or gets its error."""

    def __init__(self, sync: Broker) -> None:
        super().__init__(sync)
        self._pending: list[tuple[Sequence[Outgoing], asyncio.Future[None]]] = []

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if not self._pending:
            loop.create_task(self._flush())
        self._pending.append((messages, done))
        await done

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # the other calls of this pass join the batch
        batch, self._pending = self._pending, []
        try:
            await self.publish_batch([m for part, _ in batch for m in part])
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        for _, done in batch:
            if not done.done():
                done.set_result(None)

    @abstractmethod
    async def publish_batch(self, messages: Sequence[Outgoing]) -> None:
        """Store all of them (as AsyncBroker.publish)."""


class InlineBroker(AsyncBroker):
    """For the in-process memory broker: publishing is a dict update, so it runs inline."""

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        self.sync.publish(messages)


class PollingResultStore(AsyncResultStore):
    """For the in-process memory store (unit tests): reads are inline and instant; waiting
    polls with asyncio.sleep, growing to 50 ms, never blocking the loop."""

    async def get_many(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self.sync.get_many(task_ids)

    async def wait(self, task_id: str, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        pause = 0.001
        while True:
            meta = self.sync.get(task_id)
            remaining = deadline - time.monotonic()
            if meta is not None and meta.get("status") in states.READY_STATES or remaining <= 0:
                return meta
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.05)
