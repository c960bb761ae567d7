"""Every form of retry, against a real worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from celeriac import states
from celeriac.exceptions import MaxRetriesExceededError
from helpers import wait_until


def test_self_retry_counts_and_succeeds(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    start_worker("-c", "1")
    marker = tmp_path / "flaky"
    assert tasks.flaky.delay(str(marker), 2).get(timeout=20) == 2
    assert marker.read_text().split() == ["0", "1", "2"]


def test_retry_state_between_attempts(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    marker = tmp_path / "slowretry"
    result = tasks.flaky.apply_async((str(marker), 1))
    start_worker("-c", "1")
    # The first attempt retries in 0.1 s; RETRY is visible in between (or it already passed).
    wait_until(lambda: result.state in (states.RETRY, states.SUCCESS), 10, message="RETRY")
    assert result.get(timeout=10) == 1


def test_exhausted_retries_raise_original_exception(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    start_worker("-c", "1")
    marker = tmp_path / "exhaust"
    result = tasks.flaky.delay(str(marker), 10)
    with pytest.raises(OSError, match="attempt 3"):
        result.get(timeout=20)
    assert result.state == states.FAILURE
    assert marker.read_text().split() == ["0", "1", "2", "3"]


def test_exhausted_without_exc_is_max_retries_exceeded(tasks: Any, start_worker: Any) -> None:
    start_worker("-c", "1")
    with pytest.raises(MaxRetriesExceededError):
        tasks.always_retry.delay().get(timeout=20)


def test_autoretry_with_backoff(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    start_worker("-c", "1")
    marker = tmp_path / "auto"
    with pytest.raises(OSError, match="still broken"):
        tasks.auto_flaky.delay(str(marker)).get(timeout=20)
    assert marker.read_text().count("x") == 3  # first run + max_retries=2


def test_decorator_retry_with_per_attempt_countdown_and_handler(tasks: Any, start_worker: Any,
                                                                tmp_path: Path) -> None:
    start_worker("-c", "1")
    marker = tmp_path / "decorated"
    assert tasks.decorated_retry.delay(marker=str(marker), succeed_on=3).get(timeout=20) == 3
    attempts = [line.split() for line in marker.read_text().splitlines()]
    assert [a[0] for a in attempts] == ["0", "1", "2", "3"]
    gaps = [float(attempts[i + 1][1]) - float(attempts[i][1]) for i in range(3)]
    for gap, wanted in zip(gaps, [0.05, 0.1, 0.15], strict=True):
        assert gap >= wanted - 0.01, gaps
    handler = Path(str(marker) + ".handler").read_text().splitlines()
    assert handler == ["0 ConnectionError", "1 ConnectionError", "2 ConnectionError"]


def test_decorator_retry_exhausted_fails_with_original(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    start_worker("-c", "1")
    marker = tmp_path / "decorated_fail"
    with pytest.raises(ConnectionError):
        tasks.decorated_retry.delay(marker=str(marker), succeed_on=99).get(timeout=20)
    assert len(marker.read_text().splitlines()) == 4
