"""The asyncio client for Redis (redis.asyncio): the same Lua scripts, key names and
arguments as the synchronous broker and result store, which it wraps.

Publishing is one EVALSHA of the broker's PUBLISH script per 500 messages, the calls of one
pass of the event loop batched together. Waiting is the
sync store's: BLMOVE of the task's 'done' list onto itself, which blocks in Redis (not
here) until the worker stores the final meta. A blocked BLMOVE holds a connection, so the
waits run on a pool of their own (`max_connections` in the result store's transport
options, default 64), apart from the connections that publish and read; waits beyond it
queue for a connection, and while any do, each wait gives its connection back every
half second so that none is starved.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any, Awaitable, Callable, Sequence, TypeVar

from .._redis import _require_redis, client_options, make_client, redis_error
from ..backends.redis import RedisResultStore
from ..brokers import redis_scripts as lua
from ..brokers.base import Outgoing
from ..brokers.redis import RedisBroker
from ..exceptions import OperationalError
from .base import AsyncResultStore, BatchingBroker

T = TypeVar("T")

_BLOCK_CHUNK = 10.0       # seconds per BLMOVE when nobody waits for a connection
_SHARED_CHUNK = 0.5       # seconds per BLMOVE while other waits queue for a connection
_WAIT_CONNECTIONS = 64    # default size of the waiting pool
_COMMAND_CONNECTIONS = 16  # publishes and reads: short commands, batched; more calls queue for one


def _client(url: str, options: dict[str, Any], max_connections: int) -> Any:
    _require_redis()
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    kwargs = {**client_options(url, options), "retry": Retry(ExponentialBackoff(cap=0.5, base=0.02), 3)}
    kwargs.update(max_connections=max_connections, timeout=None)  # timeout None: queue for a connection
    return make_client(url, lambda: aioredis.Redis(
        connection_pool=aioredis.BlockingConnectionPool.from_url(url, **kwargs)))


async def _guarded(url: str, what: str, call: Callable[[], Awaitable[T]]) -> T:
    import redis
    started = time.monotonic()
    try:
        return await call()
    except redis.exceptions.RedisError as exc:
        translated = redis_error(url, what, exc, started)
        if translated is exc:
            raise
        raise translated from exc


class AsyncRedisBroker(BatchingBroker):
    sync: RedisBroker

    def __init__(self, sync: RedisBroker) -> None:
        super().__init__(sync)
        self.client = _client(sync.url, sync.options, _COMMAND_CONNECTIONS)
        self._publish = self.client.register_script(lua.PUBLISH)

    async def publish_batch(self, messages: Sequence[Outgoing]) -> None:
        for args in self.sync.publish_calls(messages):
            await _guarded(self.sync.url, "publish", functools.partial(self._publish, args=args))

    async def close(self) -> None:
        await self.client.aclose()
        await self.client.connection_pool.disconnect()


class AsyncRedisResultStore(AsyncResultStore):
    sync: RedisResultStore

    def __init__(self, sync: RedisResultStore) -> None:
        super().__init__(sync)
        self.client = _client(sync.url, sync.options, _COMMAND_CONNECTIONS)
        self.max_waits = int(sync.options.get("max_connections") or _WAIT_CONNECTIONS)
        self.waiting = _client(sync.url, sync.options, self.max_waits)
        self._fetch = self.client.register_script(lua.FETCH_RESULTS)
        self._waits = 0  # waits running or queued for a connection

    async def get_many(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for chunk, args in self.sync.fetch_calls(task_ids):
            found = await _guarded(self.sync.url, "read results", functools.partial(self._fetch, args=args))
            out.update({t: self.sync.decode(data) for t, data in zip(chunk, found, strict=True) if data})
        return out

    async def wait(self, task_id: str, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        done = self.sync.keys.done(task_id)
        backoff = 0.05
        self._waits += 1
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0.001:
                    return await self._latest(task_id)
                block = min(remaining, _BLOCK_CHUNK if self._waits <= self.max_waits else _SHARED_CHUNK)
                try:
                    data = await _guarded(self.sync.url, "wait for a result", functools.partial(
                        self.waiting.blmove, done, done, block, "RIGHT", "RIGHT"))
                except OperationalError:
                    # Redis restarting: keep waiting, with backoff, until the caller's deadline.
                    if deadline - time.monotonic() <= backoff:
                        raise
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
                    continue
                if data is not None:
                    return self.sync.decode(data)
                backoff = 0.05
        finally:
            self._waits -= 1

    async def _latest(self, task_id: str) -> dict[str, Any] | None:
        try:
            return await self.get(task_id)
        except OperationalError:
            return None

    async def close(self) -> None:
        await self.client.aclose()
        await self.client.connection_pool.disconnect()
        await self.waiting.aclose()
        await self.waiting.connection_pool.disconnect()
