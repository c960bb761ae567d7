"""What `adelay`, `aapply_async`, `asend_task`, `aget` and `aready` do, once for every transport.

Sending: the synchronous call path builds the messages (see capture.py), then they are
published on this event loop's async broker with the app's publish retry policy.
Results: read and awaited through the loop's async result store; a result's outcome
(value, re-raised exception, TimeoutError) is decided by the same code as `get()`.
"""

from __future__ import annotations

import asyncio
import collections
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from .. import states, transports
from ..exceptions import OperationalError
from .base import AsyncBroker, AsyncResultStore
from .capture import Captured, captured

if TYPE_CHECKING:
    from ..app import Celeriac
    from ..result import AsyncResult, GroupResult

T = TypeVar("T")

@dataclass
class Clients:
    broker: AsyncBroker
    store: AsyncResultStore

    async def close(self) -> None:
        await self.broker.close()
        await self.store.close()

    def abandon(self) -> None:
        """Their loop was closed without aclose(): free what can be freed without it."""
        self.broker.abandon()
        self.store.abandon()


# Async connections belong to one event loop: one set of clients per (loop, app).
_by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, Clients]]" = weakref.WeakKeyDictionary()


def clients(app: "Celeriac") -> Clients:
    """This loop's async broker and result store for `app` (made on first use; made again
    when the app's connections were reset, e.g. by a configuration change)."""
    loop = asyncio.get_running_loop()
    for closed in [other for other in _by_loop if other.is_closed()]:
        # Each asyncio.run() is a new loop; one that ended without aclose() would keep its
        # clients (and their file descriptors) forever, as they refer to it.
        for left in _by_loop.pop(closed).values():
            left.abandon()
    per_app = _by_loop.setdefault(loop, {})
    found = per_app.get(id(app))
    broker, backend = app.broker, app.backend
    if found is None or found.broker.sync is not broker or found.store.sync is not backend:
        if found is not None:
            loop.create_task(found.close())
        # each transport names its asyncio clients (celeriac.transports)
        async_broker = transports.implementation(app.broker_url, "async_broker", "broker URL", "asyncio calls")
        async_store = transports.implementation(app.result_backend_url, "async_results", "result backend",
                                                "asyncio calls")
        found = Clients(async_broker(broker), async_store(backend))
        per_app[id(app)] = found
    return found


async def aclose(app: "Celeriac") -> None:
    """Close the app's asyncio connections on the running loop (e.g. at the end of a web
    app's lifespan); the next call opens new ones."""
    found = _by_loop.get(asyncio.get_running_loop(), {}).pop(id(app), None)
    if found is not None:
        await found.close()


_PER_PASS = 8  # calls that may do their Python work (~0.1 ms each) in one pass of the loop


class _Gate:
    """Spreads the Python work of many calls that start (or finish) together over passes of
    the event loop.

    Building a message, or turning a stored result into a value, is ~0.1 ms of Python.
    asyncio runs everything that is ready in one pass, so 1,000 calls started together
    would hold the loop - its timers, other requests - for 100 ms. At most _PER_PASS calls
    go through per pass; the others wait their turn in order (a future each, woken by one
    callback per pass, so waiting costs nothing until it is their turn).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.entered = 0
        self.queue: collections.deque[asyncio.Future[None]] = collections.deque()
        self.scheduled = False

    async def enter(self) -> None:
        if not self.queue and self.entered < _PER_PASS:
            self.entered += 1
            self._next_pass_soon()
            return
        turn: asyncio.Future[None] = self.loop.create_future()
        self.queue.append(turn)
        self._next_pass_soon()
        await turn

    def _next_pass_soon(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._next_pass)

    def _next_pass(self) -> None:
        self.scheduled = False
        self.entered = 0
        while self.queue and self.entered < _PER_PASS:
            turn = self.queue.popleft()
            if not turn.done():  # a cancelled caller gives its turn away
                turn.set_result(None)
                self.entered += 1
        if self.queue:
            self._next_pass_soon()


_gates: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Gate]" = weakref.WeakKeyDictionary()


async def fair_share() -> None:
    """Wait for this call's turn to do a bit of Python work on the loop (see _Gate)."""
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = _Gate(loop)
    await gate.enter()


async def call(app: "Celeriac", send: Callable[[], T]) -> T:
    """Run a synchronous send (`apply_async`, a canvas' `apply_async`) with its publishing
    captured, then publish what it built here, without blocking the loop."""
    await fair_share()
    with captured() as box:
        result = send()
    await publish(app, box)
    return result


async def publish(app: "Celeriac", box: Captured) -> None:
    if not box.messages:
        return
    broker = clients(app).broker
    pauses = app.publish_retry_pauses()
    for attempt in range(len(pauses) + 1):
        try:
            await broker.publish(box.messages)
            await fair_share()
            break
        except OperationalError as exc:
            if attempt == len(pauses):
                raise app.publish_failed(box.describe(), len(pauses) + 1, exc) from exc
            await asyncio.sleep(pauses[attempt])
    if box.sent_events and app.conf.task_send_sent_event:
        app._send_sent_events(box.messages)  # events are sent by the blocking client (off by default)


async def wait_meta(result: "AsyncResult[Any]", timeout: float | None) -> dict[str, Any]:
    """As AsyncResult._wait, on the loop's async store."""
    if result._cache is not None:
        return result._cache
    store = clients(result.app).store
    await fair_share()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = 60.0 if deadline is None else deadline - time.monotonic()
        meta = result._remember(await store.wait(result.id, max(0.0, remaining)))
        await fair_share()  # many results arrive together: their callers go on in slices too
        if meta.get("status") in states.READY_STATES:
            return meta
        if deadline is not None and time.monotonic() >= deadline:
            return meta


async def aget(result: "AsyncResult[T]", timeout: float | None, propagate: bool) -> T:
    from ..result import EagerResult
    if isinstance(result, EagerResult):  # ran here already: nothing to wait for
        return result.get(timeout=timeout, propagate=propagate)  # type: ignore[no-any-return]
    meta = await wait_meta(result, timeout)
    return result._outcome(meta, timeout, propagate)


async def aready(result: "AsyncResult[Any]") -> bool:
    from ..result import EagerResult
    if isinstance(result, EagerResult):
        return result.ready()
    if result._cache is None:
        result._remember(await clients(result.app).store.get(result.id))
    return result._cache is not None


async def group_aget(group: "GroupResult", timeout: float | None, propagate: bool) -> list[Any]:
    """As GroupResult.join: one shared deadline, members read in batches, the first failure
    raised; then the values come from what was read (no more I/O)."""
    from ..result import AsyncResult, EagerResult, GroupResult
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pending = [r for r in group.results if isinstance(r, AsyncResult) and not isinstance(r, EagerResult)
                   and r._cache is None]
        found = await clients(group.app).store.get_many([r.id for r in pending]) if pending else {}
        for r in pending:
            if r.id in found:
                r._remember(found[r.id])
        failed = next((r for r in group.results if isinstance(r, AsyncResult) and r._cache is not None
                       and r._cache.get("status") in states.PROPAGATE_STATES), None)
        if failed is not None and propagate:
            failed.get(propagate=True, disable_sync_subtasks=False)  # from its cache: raises, no I/O
        waiting = [r for r in group.results if not _done(r)]
        if not waiting:
            break
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            from ..exceptions import TimeoutError
            raise TimeoutError(f"group {group.id}: {len(waiting)} of {len(group.results)} task(s) not "
                               f"ready after {timeout}s (first waiting: {waiting[0].id})")
        first = waiting[0]
        if isinstance(first, GroupResult):
            await group_aget(first, remaining, propagate)
        else:
            await wait_meta(first, remaining)
    return [r.get(propagate=propagate, disable_sync_subtasks=False) for r in group.results]


def _done(result: Any) -> bool:
    """Known to be finished without another read (eager results always are)."""
    from ..result import AsyncResult, EagerResult, GroupResult
    if isinstance(result, GroupResult):
        return all(_done(r) for r in result.results)
    return isinstance(result, EagerResult) or isinstance(result, AsyncResult) and result._cache is not None
