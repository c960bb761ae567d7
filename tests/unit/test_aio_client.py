"""The asyncio clients' shared parts, on the in-process memory broker and store: the message
is the sync path's, concurrent calls never mix, eager mode, errors at the call site,
the publish retry policy, the turn-taking that keeps the loop responsive."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any, Iterator

import pytest

from celeriac import Celeriac, chain, group, protocol, states
from celeriac.aio import aclose
from celeriac.aio.capture import captured, current
from celeriac.aio.client import _PER_PASS, fair_share
from celeriac.exceptions import EncodeError, OperationalError, TimeoutError


@pytest.fixture(autouse=True)
def _no_url_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELERIAC_BROKER_URL", raising=False)
    monkeypatch.delenv("CELERIAC_RESULT_BACKEND", raising=False)


@pytest.fixture
def app() -> Iterator[Celeriac]:
    name = f"aio-{uuid.uuid4().hex}"
    a = Celeriac("aio", broker=f"memory://{name}", backend=f"memory://{name}")
    yield a
    a.close()


def queued(app: Celeriac) -> list[protocol.TaskMessage]:
    sizes = app.broker.queue_sizes(["celery"])["celery"]
    deliveries = app.broker.fetch(["celery"], "w", "w/0", 1000, 0.0) if sizes["ready"] else []
    return [protocol.unpack(d.payload) for d in deliveries]


def args_of(message: protocol.TaskMessage) -> tuple[Any, ...]:
    return protocol.decode_body(message, protocol.accepted_types(["json"]))[0]


def test_adelay_publishes_what_delay_would(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    async def body() -> Any:
        result = await add.aapply_async((2, 3), priority=7, headers={"who": "aio"})
        await aclose(app)
        return result

    result = asyncio.run(body())
    [message] = queued(app)
    assert message.headers["id"] == result.id and message.headers["task"] == add.name
    assert message.headers["who"] == "aio" and args_of(message) == (2, 3)
    assert current() is None  # nothing left captured


def test_concurrent_calls_never_mix_their_messages(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    async def body() -> list[Any]:
        results = await asyncio.gather(*(add.adelay(i, i) for i in range(200)))
        await aclose(app)
        return results

    results = asyncio.run(body())
    messages = {m.headers["id"]: m for m in queued(app)}
    assert len(messages) == 200
    for i, result in enumerate(results):
        assert args_of(messages[result.id]) == (i, i)


def test_canvas_aapply_async_sends_the_sync_messages(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    async def body() -> None:
        await group(add.s(i, i) for i in range(3)).adelay()
        await chain(add.s(1, 1), add.s(2)).aapply_async()
        await aclose(app)

    asyncio.run(body())
    messages = queued(app)
    assert len(messages) == 4  # three group members and the chain's first step
    assert sum(1 for m in messages if m.headers.get("group")) == 3


def test_unencodable_arguments_raise_at_the_call_site(app: Celeriac) -> None:
    @app.task
    def echo(x: Any) -> Any:
        return x

    async def body() -> None:
        with pytest.raises(EncodeError):
            await echo.adelay(object())
        await aclose(app)

    asyncio.run(body())
    assert queued(app) == []


def test_eager_mode_runs_here(app: Celeriac) -> None:
    app.conf.task_always_eager = True

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    async def body() -> None:
        result = await add.adelay(2, 3)
        assert await result.aready() and await result.aget() == 5
        assert result.state == states.SUCCESS

    asyncio.run(body())


def test_aget_on_the_memory_store(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    async def body() -> None:
        result = await add.adelay(2, 3)
        assert not await result.aready()
        with pytest.raises(TimeoutError):
            await result.aget(timeout=0.05)
        meta = app.result_meta(result.id, states.SUCCESS, 5)
        asyncio.get_running_loop().call_later(0.05, lambda: app.backend.store([app.backend.encode(meta)]))
        assert await result.aget(timeout=5) == 5 and await result.aready()
        failing = app.AsyncResult(str(uuid.uuid4()))
        app.backend.store([app.backend.encode(app.result_meta(failing.id, states.FAILURE, KeyError("k")))])
        with pytest.raises(KeyError):
            await failing.aget(timeout=1)
        await aclose(app)

    asyncio.run(body())


def test_publish_retries_then_names_the_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    app = Celeriac("aio", broker="redis://127.0.0.1:1/0", backend="memory://aio-retry")
    app.conf.task_publish_retry_policy = {"max_retries": 2, "interval_start": 0.01, "interval_step": 0.01}

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    async def body() -> None:
        started = time.monotonic()
        with pytest.raises(OperationalError, match=r"could not publish task .*add.* to redis://127.0.0.1:1/0 "
                                                   r"after 3 attempt\(s\)"):
            await add.adelay(1, 2)
        assert time.monotonic() - started < 10
        await aclose(app)

    asyncio.run(body())


def test_turns_keep_the_loop_responsive() -> None:
    """Many calls that want to work at once go through _PER_PASS per pass of the loop, in
    order, and a timer due meanwhile runs between passes."""
    passes: list[int] = []
    order: list[int] = []

    async def body() -> None:
        loop = asyncio.get_running_loop()
        count = {"n": 0}

        def mark() -> None:
            passes.append(count["n"])

        async def worker(i: int) -> None:
            await fair_share()
            order.append(i)
            count["n"] += 1
            if count["n"] == _PER_PASS:
                loop.call_soon(mark)

        await asyncio.gather(*(worker(i) for i in range(_PER_PASS * 5)))

    asyncio.run(body())
    assert order == list(range(_PER_PASS * 5))
    assert passes and passes[0] == _PER_PASS  # the first pass let exactly _PER_PASS through


def test_no_thread_per_call(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    async def body() -> None:
        await add.adelay(0, 0)
        before = threading.active_count()
        await asyncio.gather(*(add.adelay(i, i) for i in range(100)))
        assert threading.active_count() == before
        await aclose(app)

    asyncio.run(body())


def test_capture_is_per_context() -> None:
    with captured() as outer:
        assert current() is outer
        with captured() as inner:
            assert current() is inner
        assert current() is outer
    assert current() is None


def test_rabbitmq_unreachable_is_a_clear_error_without_the_password() -> None:
    pytest.importorskip("aiormq")
    app = Celeriac("aio", broker="amqp://guest:s3cret@127.0.0.1:1//", backend="memory://aio-amqp-down")
    app.conf.task_publish_retry_policy = {"max_retries": 1, "interval_start": 0.01}

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    async def body() -> None:
        with pytest.raises(OperationalError) as caught:
            await add.adelay(1, 2)
        text = str(caught.value)
        assert "amqp://guest:**@127.0.0.1:1//" in text and "after 2 attempt(s)" in text
        assert "s3cret" not in text
        await aclose(app)

    asyncio.run(body())


def test_sqlite_publish_waits_for_a_locked_file_on_the_loop(tmp_path: Any) -> None:
    """Another connection holds the write lock for 0.3 s: adelay() waits for it without
    holding the loop (a 5 ms ticker keeps ticking), then publishes."""
    import sqlite3
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    app = Celeriac("aio", broker=url, backend=url)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    app.broker.queue_sizes(["celery"])  # tables created
    holder = sqlite3.connect(str(tmp_path / "locked.db"), isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, holder.execute, ("COMMIT",)).start()

    async def body() -> tuple[float, float]:
        worst, stop = [0.0], asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                worst[0] = max(worst[0], now - last)
                last = now

        tick = asyncio.create_task(ticker())
        started = time.perf_counter()
        await add.adelay(1, 2)
        took = time.perf_counter() - started
        stop.set()
        await tick
        await aclose(app)
        return took, worst[0]

    took, worst = asyncio.run(body())
    holder.close()
    assert took >= 0.25, "published while another connection held the write lock"
    assert worst < 0.1, f"the loop was held {worst * 1000:.0f} ms while the file was locked"
    assert app.broker.queue_sizes(["celery"])["celery"]["ready"] == 1
    app.close()


def test_a_loop_closed_without_aclose_leaves_no_descriptor(tmp_path: Any) -> None:
    """asyncio.run() after asyncio.run() without aclose(): the SQLite waits' inotify
    descriptors of the finished loops are closed, not piled up (the kernel allows ~128)."""
    import os
    url = f"sqlite:///{tmp_path / 'loops.db'}"
    app = Celeriac("aio", broker=url, backend=url)

    async def look() -> None:
        with pytest.raises(TimeoutError):
            await app.AsyncResult(str(uuid.uuid4())).aget(timeout=0.01)

    asyncio.run(look())
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        asyncio.run(look())
    assert len(os.listdir("/proc/self/fd")) <= fds + 2
    app.close()
