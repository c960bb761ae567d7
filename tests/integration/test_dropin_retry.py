"""The tutorial's `@retry` examples verbatim on a real worker: the body's own
`raise self.retry(exc=exc)` uses the decorator's countdown, max_retries and on_retry."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from celeriac.exceptions import Retry


@pytest.fixture
def dropin(app_env: dict[str, str]) -> Iterator[Any]:
    import dropin_app
    dropin_app.app._reset_connections()
    yield dropin_app
    dropin_app.app._reset_connections()


def attempt_gaps(marker: Path) -> tuple[list[int], list[float]]:
    rows = [line.split() for line in marker.read_text().splitlines()]
    times = [float(r[1]) for r in rows]
    return [int(r[0]) for r in rows], [b - a for a, b in zip(times, times[1:], strict=False)]


def assert_delays(gaps: list[float], wanted: list[float]) -> None:
    """Each gap is at least the wanted delay, and nowhere near default_retry_delay (180 s)."""
    assert len(gaps) == len(wanted), gaps
    for gap, delay in zip(gaps, wanted, strict=True):
        assert delay - 0.02 <= gap < delay + 3.0, (gaps, wanted)


def test_constant_countdown(dropin: Any, start_worker: Any, tmp_path: Path) -> None:
    start_worker("-c", "1", app="dropin_app")
    marker = tmp_path / "constant"
    assert dropin.constant_countdown.delay(str(marker), 3).get(timeout=30) == 3
    retries, gaps = attempt_gaps(marker)
    assert retries == [0, 1, 2, 3]
    assert_delays(gaps, [0.3, 0.3, 0.3])


def test_countdown_list_is_per_attempt(dropin: Any, start_worker: Any, tmp_path: Path) -> None:
    start_worker("-c", "1", app="dropin_app")
    marker = tmp_path / "listed"
    assert dropin.listed_countdown.delay(str(marker), 3).get(timeout=30) == 3
    retries, gaps = attempt_gaps(marker)
    assert retries == [0, 1, 2, 3]
    assert_delays(gaps, [0.2, 0.5, 0.9])


def test_on_retry_handler_and_max_retries(dropin: Any, start_worker: Any, tmp_path: Path) -> None:
    start_worker("-c", "1", app="dropin_app")
    marker = tmp_path / "handled"
    result = dropin.with_handler.delay(str(marker), 99)  # never succeeds: max_retries=3 ends it
    with pytest.raises(ConnectionError, match="attempt 3 failed"):
        result.get(timeout=30)
    retries, gaps = attempt_gaps(marker)
    assert retries == [0, 1, 2, 3]
    assert_delays(gaps, [0.2, 0.5, 0.9])
    handler = Path(str(marker) + ".handler").read_text().splitlines()
    assert handler == ["0 ConnectionError", "1 ConnectionError", "2 ConnectionError"]  # not on the last


def test_under_decorators_task_last_delay_repeats(dropin: Any, start_worker: Any, tmp_path: Path) -> None:
    start_worker("-c", "1", app="dropin_app")
    marker = tmp_path / "plain"
    with pytest.raises(ConnectionError):
        dropin.under_plain_task.delay(str(marker), 99).get(timeout=30)
    retries, gaps = attempt_gaps(marker)
    assert retries == [0, 1, 2]  # max_retries=2 of this decorator, not the task's default 3
    assert_delays(gaps, [0.2, 0.6])
    assert dropin.under_plain_task.name == "dropin_app.under_plain_task"


def test_policy_is_per_run_and_explicit_countdown_wins(tmp_path: Path) -> None:
    """Eager: the policy applies while the body runs and is gone afterwards; an explicit
    countdown passed to self.retry() is kept."""
    from celeriac import Celeriac
    from celeriac.decorators import retry
    app = Celeriac("policy_unit", broker="memory://", backend="memory://", set_as_current=False)
    seen: list[Any] = []

    @app.task(bind=True)
    @retry(max_retries=1, countdown=[7, 8])
    def explicit(self: Any) -> None:
        try:
            raise self.retry(exc=OSError("x"), countdown=1)
        except Retry as signal:
            seen.append((signal.when, self.request.retry_policy is not None))
            raise

    with pytest.raises(OSError):
        explicit.apply(throw=True)
    assert seen == [(1, True)]  # the explicit countdown; the second run is past max_retries=1


def test_async_body_uses_the_policy_too() -> None:
    from celeriac import Celeriac
    from celeriac.decorators import retry
    app = Celeriac("policy_async", broker="memory://", backend="memory://", set_as_current=False)
    told: list[int] = []

    def handler(request: Any, exc: BaseException | None = None) -> None:
        told.append(request.retries)

    @app.task(bind=True)
    @retry(max_retries=2, countdown=[1, 2], on_retry=handler)
    async def tutorial_async(self: Any) -> None:
        try:
            raise ConnectionError("down")
        except Exception as exc:
            raise self.retry(exc=exc)  # noqa: B904 - the tutorial's form

    with pytest.raises(ConnectionError, match="down"):
        tutorial_async.apply(throw=True)
    assert told == [0, 1]  # two retries (max_retries=2 of the decorator), handler before each
