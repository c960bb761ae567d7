"""The asyncio clients (docs/asyncio.md) against a real worker, on every broker."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any, Awaitable, Callable

import pytest

from celeriac import AsyncResult, chain, chord, group
from celeriac.aio import aclose
from celeriac.exceptions import TimeoutError


def run(tasks: Any, body: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine on a fresh loop and close the app's asyncio connections at the end."""
    async def main() -> Any:
        try:
            return await body()
        finally:
            await aclose(tasks.app)
    return asyncio.run(main())


def test_adelay_aget_aready_and_asend_task(tasks: Any, start_worker: Any) -> None:
    start_worker("-c", "2")

    async def body() -> None:
        result = await tasks.add.adelay(2, 3)
        assert isinstance(result, AsyncResult)
        assert await result.aget(timeout=10) == 5
        assert await result.aready()
        by_name = await tasks.app.asend_task("tasks_app.mul", (4, 5))
        assert await by_name.aget(timeout=10) == 20
        slow = await tasks.slow.adelay(1.0)
        assert not await slow.aready()
        assert await slow.aget(timeout=10) == "done"
        assert await slow.aready()
        # What the async client sent is what the sync client reads, and the other way round.
        assert tasks.add.delay(1, 1).get(timeout=10) == 2
        assert tasks.app.AsyncResult(result.id).get(timeout=1) == 5

    run(tasks, body)


def test_aapply_async_countdown_runs_no_earlier(tasks: Any, start_worker: Any) -> None:
    start_worker("-c", "2")

    async def body() -> None:
        sent = time.time()
        result = await tasks.add.aapply_async((1, 1), countdown=2)
        assert await result.aget(timeout=20) == 2
        assert result.date_done is not None
        assert result.date_done.timestamp() >= sent + 2

    run(tasks, body)


def test_aget_timeout_and_failures(tasks: Any, start_worker: Any) -> None:
    start_worker("-c", "2")

    async def body() -> None:
        slow = await tasks.slow.adelay(5.0)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await slow.aget(timeout=0.5)
        assert 0.45 <= time.monotonic() - started < 3
        failing = await tasks.fail.adelay("async boom")
        with pytest.raises(ValueError, match="async boom"):
            await failing.aget(timeout=10)
        assert isinstance(await failing.aget(timeout=1, propagate=False), ValueError)
        bad_group = await group(tasks.add.s(1, 1), tasks.fail.s("in a group")).aapply_async()
        with pytest.raises(ValueError, match="in a group"):
            await bad_group.aget(timeout=10)

    run(tasks, body)


def test_canvas_group_chain_and_chord(tasks: Any, start_worker: Any) -> None:
    start_worker("-c", "2")

    async def body() -> None:
        members = await group(tasks.add.s(i, i) for i in range(10)).adelay()
        assert await members.aget(timeout=20) == [2 * i for i in range(10)]
        assert await members.aready()
        steps = await chain(tasks.add.s(1, 2), tasks.add.s(3), tasks.mul.s(10)).aapply_async()
        assert await steps.aget(timeout=20) == 60
        total = await chord([tasks.add.s(i, 1) for i in range(5)], tasks.tsum.s()).aapply_async()
        assert await total.aget(timeout=20) == sum(i + 1 for i in range(5))
        single = await tasks.add.s(20, 22).adelay()
        assert await single.aget(timeout=10) == 42

    run(tasks, body)


def _thread_times() -> tuple[float, float]:
    """(seconds this thread has run on a CPU, seconds it has spent runnable but not running
    because the OS ran other processes), from /proc/thread-self/schedstat; where the kernel
    does not report it, the CPU time from time.thread_time() and 0.0 waited."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            ran, waited = f.read().split()[:2]
        return int(ran) / 1e9, int(waited) / 1e9
    except (OSError, ValueError):
        return time.thread_time(), 0.0


def _steal_by_cpu() -> dict[int, float]:
    """Seconds the hypervisor has run something else while each of this VM's CPUs wanted to run
    (steal, /proc/stat, in 10 ms units); empty where the kernel does not say."""
    stolen: dict[int, float] = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name != "cpu" and len(fields) >= 8:
                    stolen[int(name[3:])] = int(fields[7]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        pass
    return stolen


def _this_cpu() -> int:
    """The CPU this thread ran on last (/proc/thread-self/stat, field 39), -1 if unknown."""
    try:
        with open("/proc/thread-self/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[36])
    except (OSError, ValueError, IndexError):
        return -1


def test_loop_never_stalls_and_no_thread_per_call(tasks: Any, start_worker: Any) -> None:
    """A 10 ms ticker on the same loop while 1,000 tasks are sent and awaited concurrently:
    the loop's thread never sits in a blocking call, and no thread is started for any call.

    A tick's lateness is made of three things: the loop's thread computing (the client's
    callbacks and the garbage collector), the thread waiting for a CPU the OS gave to other
    processes (the worker, the servers, a busy CI machine), and the thread asleep in a call
    that is not the loop's own wait - a blocking socket read, a lock, a sleep. Only the last is
    a stall in the sense that matters (an async client that blocks its loop), and it does not
    depend on how fast or how shared the machine is, so it is what is held down: a tick's
    lateness less its computing and its waiting for a CPU stays under 15 ms. That figure leaves
    out up to the tick's own 10 ms of legitimate waiting, and the kernel counts CPU time in 4 ms
    ticks, so what it surely catches is a blocking call of 30 ms or more (a 30 ms time.sleep()
    on the loop failed it in each of eight runs). Computing is held under a bound of its own
    (250 ms in one tick: room for a 4x throttled CPU, far below handling 1,000 replies in one
    pass of the loop).
    One thing the guest cannot see: on a shared host the hypervisor stops the thread's CPU now
    and then (steal), and that time counts as neither computing nor waiting - a CI run once
    measured 15.5 ms that way. The steal of the thread's CPU is read from /proc/stat (only in
    10 ms units, too coarse to take off) and shown; a pass over the bound is measured again,
    and the test fails only when the second pass is over it too: a blocking call in the client
    happens in every pass (the 30 ms sleep failed both, six runs of six), a steal rarely twice.
    All the figures are in the failure message."""
    start_worker("-c", "2")
    import gc

    async def body() -> None:
        await (await tasks.add.adelay(0, 0)).aget(timeout=30)  # connections opened, worker warm
        before = threading.active_count()
        first = await _stall_pass(tasks, before, with_warmup=True)
        if first["blocked"] >= 0.015:
            second = await _stall_pass(tasks, before, with_warmup=False)
            assert second["blocked"] < 0.015, (f"the event loop's thread blocked in two passes: "
                                               f"{_figures(first)}; then {_figures(second)}")
        assert first["computing"] < 0.25, f"the event loop computed too long in one go: {_figures(first)}"
        assert threading.active_count() == before

    gc.freeze()  # pytest's and the suite's own heap is not the client's to collect
    try:
        run(tasks, body)
    finally:
        gc.unfreeze()


def _figures(worst: dict[str, float]) -> str:
    return (f"worst tick: {worst['late'] * 1000:.0f} ms late, {worst['blocked'] * 1000:.1f} ms of it in a "
            f"blocking call ({worst['stolen'] * 1000:.0f} ms stolen by the hypervisor meanwhile, in 10 ms "
            f"units); most computing in one tick {worst['computing'] * 1000:.0f} ms")


async def _stall_pass(tasks: Any, threads_before: int, with_warmup: bool) -> dict[str, float]:
    """100 calls, then 1,000 in flight together, with the 10 ms ticker beside them: the worst tick."""
    worst = {"late": 0.0, "blocked": 0.0, "computing": 0.0, "stolen": 0.0}
    most_threads = [0]

    async def ticker(stop: asyncio.Event) -> None:
        last = time.perf_counter()
        ran, waited = _thread_times()
        steal, cpu = _steal_by_cpu(), _this_cpu()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            now_ran, now_waited = _thread_times()
            now_steal, now_cpu = _steal_by_cpu(), _this_cpu()
            late = now - last - 0.01
            computing = now_ran - ran
            blocked = late - computing - (now_waited - waited)
            worst["late"] = max(worst["late"], late)
            worst["computing"] = max(worst["computing"], computing)
            if blocked > worst["blocked"]:
                worst["blocked"] = blocked
                worst["stolen"] = sum(now_steal.get(c, 0.0) - steal.get(c, 0.0) for c in {cpu, now_cpu})
            most_threads[0] = max(most_threads[0], threading.active_count())
            last, ran, waited, steal, cpu = now, now_ran, now_waited, now_steal, now_cpu

    async def one(i: int) -> int:
        result = await tasks.add.adelay(i, 1)
        return int(await result.aget(timeout=120))

    stop = asyncio.Event()
    tick = asyncio.create_task(ticker(stop))
    if with_warmup:
        values = await asyncio.gather(*(one(i) for i in range(100)))
        assert values == [i + 1 for i in range(100)]
        assert threading.active_count() == threads_before and most_threads[0] == threads_before, \
            f"threads: {threads_before} before, {most_threads[0]} at most during 100 calls"
    calls = []
    for start in range(0, 1000, 20):  # 1,000 calls in flight together, started 20 per pass of the loop
        calls += [asyncio.create_task(one(i)) for i in range(start, start + 20)]
        await asyncio.sleep(0)
    values = await asyncio.gather(*calls)
    stop.set()
    await tick
    assert values == [i + 1 for i in range(1000)]
    assert most_threads[0] == threads_before, f"threads: {threads_before} before, {most_threads[0]} at most"
    return worst


@pytest.mark.parametrize("broker_kind", ["redis"], indirect=True)
def test_redis_waits_beyond_the_connection_pool_are_batched(tasks: Any, start_worker: Any) -> None:
    """With max_connections 2, two waits block in Redis and the other 48 are looked up in
    batches: all get their results, in time, and a batched wait still times out."""
    tasks.app.conf.result_backend_transport_options = {"max_connections": 2}
    try:
        start_worker("-c", "2")

        async def body() -> None:
            started = time.monotonic()
            results = await asyncio.gather(*(tasks.add.adelay(i, i) for i in range(50)))
            values = await asyncio.gather(*(r.aget(timeout=30) for r in results))
            assert values == [2 * i for i in range(50)]
            assert time.monotonic() - started < 20
            slow = await asyncio.gather(*(tasks.slow.adelay(3.0) for _ in range(3)))
            waits = [asyncio.ensure_future(r.aget(timeout=0.5)) for r in slow]
            outcomes = await asyncio.gather(*waits, return_exceptions=True)
            assert all(isinstance(o, TimeoutError) for o in outcomes), outcomes
            assert await slow[2].aget(timeout=30) == "done"  # the third was batched (two connections)

        run(tasks, body)
    finally:
        tasks.app.conf.result_backend_transport_options = {}


@pytest.mark.parametrize("broker_kind", ["postgres"], indirect=True)
def test_postgres_big_group_goes_by_copy(tasks: Any, start_worker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A big group from the asyncio client is written with COPY too, in order, and runs."""
    from celeriac.transports.postgres import aio as pg_aio
    from celeriac.transports.postgres.broker import COPY_FROM
    plans: list[int] = []
    real_plan = pg_aio.copy_plan

    def counting_plan(schema: str, messages: Any) -> Any:
        plan = real_plan(schema, messages)
        if plan is not None:
            plans.append(len(plan[1]))
        return plan

    monkeypatch.setattr(pg_aio, "copy_plan", counting_plan)
    size = COPY_FROM + 100
    start_worker("-c", "2")

    async def body() -> None:
        members = await group(tasks.add.s(i, i) for i in range(size)).adelay()
        assert plans == [size]
        assert await members.aget(timeout=60) == [2 * i for i in range(size)]

    run(tasks, body)
