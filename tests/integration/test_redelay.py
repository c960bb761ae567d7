"""Messages that pass a broker's delay more than once (issue 20).

On RabbitMQ a delay is a path through TTL queues (one per set bit of the delay), and
RabbitMQ drops a message that dead-letters into a queue its `x-death` history already
names. A message built again from a delivered one (a retry, a rate-limit deferral, a
countdown task sent by a delayed task) must therefore never inherit that history. The
countdowns below are 0.3 s: three 100 ms units, two set bits, so two delay queues per pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from celeriac import states


def _attempts(marker: Path) -> list[tuple[int, float]]:
    return [(int(a), float(t)) for a, t in (line.split() for line in marker.read_text().splitlines())]


@pytest.mark.timeout(120)
def test_five_retries_with_countdown_each_reach_success(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    start_worker("-c", "2")
    markers = [tmp_path / f"retry{i}" for i in range(5)]
    results = [tasks.retry_with_countdown.delay(str(m), 5, 0.3) for m in markers]
    assert [r.get(timeout=60) for r in results] == [5] * 5
    for marker in markers:
        attempts = _attempts(marker)
        assert [a for a, _ in attempts] == [0, 1, 2, 3, 4, 5]
        gaps = [b - a for (_, a), (_, b) in zip(attempts, attempts[1:], strict=False)]
        assert min(gaps) >= 0.29, gaps  # each retry waited its countdown, never ran early


@pytest.mark.timeout(120)
def test_rate_limited_task_that_retries_is_limited_on_every_attempt(tasks: Any, start_worker: Any,
                                                                   tmp_path: Path) -> None:
    # 4 tasks x 4 attempts at 5/s: 16 starts need at least 15 intervals of 200 ms. A retry that
    # inherited its deferral's "slot already reserved" mark would skip the limit (and run in
    # about 1.5 s); one that inherited x-death would be lost on RabbitMQ.
    start_worker("-c", "2")
    markers = [tmp_path / f"limited{i}" for i in range(4)]
    results = [tasks.limited_retry.delay(str(m), 3) for m in markers]
    assert [r.get(timeout=60) for r in results] == [3] * 4
    starts = sorted(t for m in markers for _, t in _attempts(m))
    assert len(starts) == 16
    assert starts[-1] - starts[0] >= 15 * 0.2 - 0.05, starts


@pytest.mark.timeout(120)
def test_countdown_task_sent_by_a_delayed_task_runs(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    start_worker("-c", "2")
    parents = [tasks.delay_child.apply_async((str(tmp_path / f"child{i}"), 0.3), countdown=0.3) for i in range(3)]
    child_ids = [p.get(timeout=30) for p in parents]
    children = [tasks.retry_with_countdown.AsyncResult(cid) for cid in child_ids]
    assert [c.get(timeout=30) for c in children] == [0, 0, 0]
    assert all(c.state == states.SUCCESS for c in children)
