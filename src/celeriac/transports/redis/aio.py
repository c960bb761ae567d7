"""The asyncio client for Redis (redis.asyncio): the same Lua scripts, key names and
arguments as the synchronous broker and result store, which it wraps.

Publishing is one EVALSHA of the broker's PUBLISH script per 500 messages, the calls of one
pass of the event loop batched together. Waiting is the
sync store's: BLMOVE of the task's 'done' list onto itself, which blocks in Redis (not
here) until the worker stores the final meta. A blocked BLMOVE holds a connection, so
these waits run on a pool of their own (`max_connections` in the result store's transport
options, default 64), apart from the connections that publish and read. Waits beyond
that many are batched: one FETCH_RESULTS call looks all of them up, each time a blocking
wait gets its result and at least every 50 ms.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any, Awaitable, Callable, Sequence, TypeVar

from .client import _require_redis, client_options, make_client, not_replicated, redis_error, replica_wait, transaction
from .topology import is_cluster_url, is_sentinel_url, parse_nodes, sentinel_settings
from .results import RedisResultStore
from ... import states
from . import scripts as lua
from ...brokers.base import Outgoing
from .broker import RedisBroker
from ...exceptions import OperationalError
from ...aio.base import AsyncResultStore, BatchingBroker

T = TypeVar("T")

_BLOCK_CHUNK = 10.0       # seconds per BLMOVE
_BATCH_PAUSE = 0.05       # seconds at most between two looks of the batched waits
_WAIT_CONNECTIONS = 64    # default size of the waiting pool
_COMMAND_CONNECTIONS = 16  # publishes and reads: short commands, batched; more calls queue for one


def _client(url: str, options: dict[str, Any], max_connections: int) -> Any:
    _require_redis()
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    kwargs = {**client_options(url, options), "retry": Retry(ExponentialBackoff(cap=0.5, base=0.02), 3)}
    if is_cluster_url(url):
        return make_client(url, lambda: _cluster(url, {**kwargs, "max_connections": max_connections}))
    if is_sentinel_url(url):
        return make_client(url, lambda: _sentinel(url, options, {**kwargs, "max_connections": max_connections}))
    kwargs.update(max_connections=max_connections, timeout=None)  # timeout None: queue for a connection
    return make_client(url, lambda: aioredis.Redis(
        connection_pool=aioredis.BlockingConnectionPool.from_url(url, **kwargs)))


def _cluster(url: str, kwargs: dict[str, Any]) -> Any:
    """redis.asyncio's RedisCluster: made without I/O, it learns the cluster on its first command."""
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    nodes = parse_nodes(url, 6379)
    startup = [ClusterNode(h, p) for h, p in nodes.hosts]
    return RedisCluster(startup_nodes=startup, username=nodes.username, password=nodes.password, ssl=nodes.tls,
                        **kwargs)


def _sentinel(url: str, options: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    from redis.asyncio.sentinel import Sentinel
    import redis.asyncio as aioredis
    nodes, own, master = sentinel_settings(url, options, kwargs)
    sentinel = Sentinel(nodes.hosts, sentinel_kwargs=own, username=nodes.username,  # type: ignore[no-untyped-call, unused-ignore]
                        password=nodes.password, db=nodes.db, **kwargs)
    return sentinel.master_for(master, redis_class=aioredis.Redis)


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
        self.wait = replica_wait(sync.client)  # the sync client's `wait_replicas`, honoured here too

    async def publish_batch(self, messages: Sequence[Outgoing]) -> None:
        native, kombu = self.sync._split_wire(messages)  # queues shared with Celery: kombu's lists
        if kombu:
            await _guarded(self.sync.url, "publish", functools.partial(self._pipeline, self.sync.kombu_commands(kombu)))
        for keys, args in self.sync.publish_calls(native):
            if self.wait is None:
                await _guarded(self.sync.url, "publish", functools.partial(self._publish, keys=keys, args=args))
            else:
                await _guarded(self.sync.url, "publish", functools.partial(self._publish_confirmed, keys, args))

    async def _publish_confirmed(self, keys: list[str], args: list[Any]) -> None:
        """The script and a WAIT on one connection (a pipeline), as the sync client does."""
        assert self.wait is not None
        async with self.client.pipeline(transaction=False) as pipe:
            await self._publish(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", *self.wait)
            confirmed = int((await pipe.execute())[-1])
        if confirmed < self.wait[0]:
            raise not_replicated(confirmed, *self.wait)

    async def _pipeline(self, commands: list[tuple[Any, ...]]) -> None:
        if self.wait is not None:  # MULTI/EXEC and WAIT on one connection: the sync client's (a thread)
            await asyncio.to_thread(transaction, self.sync.client, commands)
            return
        async with self.client.pipeline(transaction=True) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            await pipe.execute()

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
        self._direct = 0  # blocking waits (one connection each)
        self._batched: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self._batcher: asyncio.Task[None] | None = None
        self._progress = asyncio.Event()

    async def get_many(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for chunk, keys, args in self.sync.fetch_calls(task_ids):
            found = await _guarded(self.sync.url, "read results", functools.partial(self._fetch, keys=keys, args=args))
            out.update({t: self.sync.decode(data) for t, data in zip(chunk, found, strict=True) if data})
        return out

    async def wait(self, task_id: str, timeout: float) -> dict[str, Any] | None:
        if self._direct < self.max_waits:
            self._direct += 1
            try:
                return await self._wait_blocking(task_id, timeout)
            finally:
                self._direct -= 1
        return await self._wait_batched(task_id, timeout)

    async def _wait_blocking(self, task_id: str, timeout: float) -> dict[str, Any] | None:
        """The sync store's wait: BLMOVE of the 'done' list onto itself, on a connection of its own."""
        deadline = time.monotonic() + timeout
        done = self.sync.keys.done(task_id)
        backoff = 0.05
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0.001:
                return await self._latest(task_id)
            try:
                data = await _guarded(self.sync.url, "wait for a result", functools.partial(
                    self.waiting.blmove, done, done, min(remaining, _BLOCK_CHUNK), "RIGHT", "RIGHT"))
            except OperationalError:
                # Redis restarting: keep waiting, with backoff, until the caller's deadline.
                if deadline - time.monotonic() <= backoff:
                    raise
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            if data is not None:
                self._progress.set()  # results are coming in: the batched waits look now
                return self.sync.decode(data)
            backoff = 0.05

    async def _wait_batched(self, task_id: str, timeout: float) -> dict[str, Any] | None:
        """Beyond `max_connections` blocking waits: one reader looks up every such task in one
        FETCH_RESULTS call whenever a blocking wait got its result (tasks mostly finish in
        the order they were sent), and at least every _BATCH_PAUSE seconds."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._batched.setdefault(task_id, []).append(future)
        if self._batcher is None or self._batcher.done():
            self._batcher = loop.create_task(self._read_batched())
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return await self._latest(task_id)
        finally:
            waiting = self._batched.get(task_id)
            if waiting and future in waiting:
                waiting.remove(future)
                if not waiting:
                    del self._batched[task_id]

    async def _read_batched(self) -> None:
        while self._batched:
            self._progress.clear()
            try:
                found = await self.get_many(list(self._batched))
            except OperationalError:
                found = {}  # Redis away: the waits' own deadlines end them
            for task_id, meta in found.items():
                if meta.get("status") in states.READY_STATES:
                    for future in self._batched.pop(task_id, []):
                        if not future.done():
                            future.set_result(meta)
            if self._batched:
                try:
                    await asyncio.wait_for(self._progress.wait(), _BATCH_PAUSE)
                except TimeoutError:
                    pass

    async def _latest(self, task_id: str) -> dict[str, Any] | None:
        try:
            return await self.get(task_id)
        except OperationalError:
            return None

    async def close(self) -> None:
        if self._batcher is not None:
            self._batcher.cancel()
        await self.client.aclose()
        await self.client.connection_pool.disconnect()
        await self.waiting.aclose()
        await self.waiting.connection_pool.disconnect()
