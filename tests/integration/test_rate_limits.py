"""Rate limits on real worker processes: global (all workers share one schedule) and per worker."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest


def _spread(starts: list[float]) -> float:
    return max(starts) - min(starts)


def _most_in_one_second(times: list[float]) -> int:
    ordered = sorted(times)
    return max(sum(1 for t in ordered if s <= t < s + 1.0) for s in ordered)


@pytest.mark.timeout(180)
def test_global_rate_limit_is_shared_by_four_workers(tasks: Any, start_worker: Any, broker_kind: str) -> None:
    for n in range(4):
        start_worker("-c", "1", "-n", f"w{n}@host")
    sent = time.monotonic()
    results = [tasks.limited_global.delay(i) for i in range(200)]
    done = [r.get(timeout=120) for r in results]
    elapsed = time.monotonic() - sent
    starts = [start for start, _ in done]
    slots = {start: datetime.fromisoformat(eta).timestamp() for start, eta in done if eta}
    assert elapsed >= 9.5, elapsed  # 200 tasks at 20/s: 199 intervals of 50 ms
    assert _spread(starts) >= 9.4, _spread(starts)
    assert elapsed < 30, elapsed  # and not much slower than the rate
    # The four workers reserved from one schedule: slots 50 ms apart. A slot is the store's
    # answer plus the deferring worker's clock, so one can land a few ms off, never a second's worth.
    assert len(slots) >= 190, len(slots)  # all but the first few were over the rate
    assert _most_in_one_second(list(slots.values())) <= 23, sorted(slots.values())
    # None ran before its slot (2 ms: the header's rounding and two processes' clock reads).
    early = [slot - start for start, slot in slots.items() if start < slot - 0.002]
    assert not early, early
    # A start is its slot plus the broker's lateness in handing the message back: a few ms on
    # SQLite, Redis and PostgreSQL when the machine is quiet (measured: median 2-4 ms, max 6-65 ms
    # with three busy loops beside), 60-75 ms median and up to 0.7 s on RabbitMQ (its delay levels
    # round up to 100 ms and add a hop per level), plus whatever a loaded machine adds to every
    # process: late starts share a second with on-time ones (CI has seen 36 on PostgreSQL, and 66 on
    # RabbitMQ with a median lateness of 0.14 s and a max of 2.7 s). A burst (the limit not applied)
    # would start nearly all 200 in one second; the typical start stays near its slot.
    lateness = sorted(start - slot for start, slot in slots.items())
    median = lateness[len(lateness) // 2]
    busiest = _most_in_one_second(starts)
    shown = (busiest, "lateness median", median, "max", lateness[-1])
    assert busiest <= (100 if broker_kind == "amqp" else 60), shown
    assert median <= (0.5 if broker_kind == "amqp" else 0.25), shown


@pytest.mark.timeout(180)
def test_per_worker_rate_limit(tasks: Any, start_worker: Any) -> None:
    start_worker("-c", "2")
    sent = time.monotonic()
    starts = [r.get(timeout=120) for r in [tasks.limited_per_worker.delay(i) for i in range(200)]]
    elapsed = time.monotonic() - sent
    assert elapsed >= 9.5 and _spread(starts) >= 9.4, (elapsed, _spread(starts))
    assert elapsed < 30, elapsed


def test_rate_limited_task_does_not_block_others(tasks: Any, start_worker: Any) -> None:
    start_worker("-c", "1")
    limited = [tasks.limited_per_worker.delay(i) for i in range(100)]  # 5 s of work at 20/s
    sent = time.monotonic()
    others = [tasks.add.delay(i, i) for i in range(50)]
    assert [r.get(timeout=30) for r in others] == [i + i for i in range(50)]
    # Did not wait behind the limited ones (5 s of them at 20/s, a wall-clock rate no load changes):
    # the others pass the 100 deferred messages in front of them (~1 s here, 3.5 s seen on a loaded CI).
    assert time.monotonic() - sent < 4.5
    assert sum(1 for r in limited if r.ready()) < 100
    assert len([r.get(timeout=60) for r in limited]) == 100
