"""Soft and hard time limits on real worker processes, on every broker."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from celeriac import states
from celeriac.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded


def test_hard_limit_ends_endless_loop_and_sleep_then_worker_serves_on(tasks: Any, start_worker: Any) -> None:
    worker = start_worker("-c", "2")
    started = time.monotonic()
    looping = tasks.spin.apply_async(time_limit=1)
    sleeping = tasks.sleepy.apply_async((60,), time_limit=1)
    for result in (looping, sleeping):
        with pytest.raises(TimeLimitExceeded, match="hard time limit of 1s"):
            result.get(timeout=20)
        assert result.state == states.FAILURE
    assert time.monotonic() - started < 10
    results = [tasks.add.delay(i, i) for i in range(100)]
    assert [r.get(timeout=30) for r in results] == [i + i for i in range(100)]
    assert worker.proc.poll() is None
    assert "Hard time limit (1s) exceeded" in worker.output
    assert looping.get(timeout=1, propagate=False) is not None  # stays FAILURE: not redelivered and re-run
    assert tasks.app.backend.get(looping.id)["status"] == states.FAILURE


def test_soft_limit_raises_inside_the_task(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    start_worker("-c", "2")
    marker = tmp_path / "cleanup"
    assert tasks.cleans_up.apply_async((str(marker),), soft_time_limit=0.5, time_limit=10).get(timeout=20) \
        == "cleaned up"
    assert marker.read_text() == "cleaned"
    with pytest.raises(SoftTimeLimitExceeded):
        tasks.sleepy.apply_async((60,), soft_time_limit=0.5).get(timeout=20)


def test_worker_time_limit_options_apply_to_tasks_without_their_own(tasks: Any, start_worker: Any) -> None:
    start_worker("-c", "1", "--time-limit", "1")
    with pytest.raises(TimeLimitExceeded):
        tasks.sleepy.delay(60).get(timeout=20)
    assert tasks.sleepy.delay(0.1).get(timeout=20) == "woke up"


def test_thread_pool_soft_limit_and_hard_limit_warning(tasks: Any, start_worker: Any) -> None:
    worker = start_worker("-P", "thread", "-c", "2", "--time-limit", "30")
    assert worker.output.count("hard time limits are not enforced in the thread pool") == 1
    with pytest.raises(SoftTimeLimitExceeded):
        tasks.spin.apply_async(soft_time_limit=0.5).get(timeout=20)
    assert tasks.add.delay(1, 2).get(timeout=20) == 3


def test_async_task_limits(tasks: Any, start_worker: Any) -> None:
    start_worker("-c", "1")
    with pytest.raises(SoftTimeLimitExceeded):
        tasks.async_sleepy.apply_async((60,), soft_time_limit=0.5).get(timeout=20)
    with pytest.raises(TimeLimitExceeded):
        tasks.async_sleepy.apply_async((60,), time_limit=0.5).get(timeout=20)
    assert tasks.async_sleepy.delay(0.01).get(timeout=20) == "woke up"
