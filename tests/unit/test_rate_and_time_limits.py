"""Rate-limit parsing and schedules on every result store; time-limit precedence."""

from __future__ import annotations

import time

import pytest

from celeriac import Celeriac
from celeriac.backends import ResultStore
from celeriac.task import Context
from celeriac.worker.limits import limits_for
from celeriac.worker.ratelimit import interval_of


def test_interval_of_rates() -> None:
    assert interval_of("10/s") == pytest.approx(0.1)
    assert interval_of("100/m") == pytest.approx(0.6)
    assert interval_of("1000/h") == pytest.approx(3.6)
    assert interval_of("4/sec") == pytest.approx(0.25)
    assert interval_of(5) == pytest.approx(0.2)
    assert interval_of(None) is None and interval_of("0/s") is None
    with pytest.raises(ValueError, match="like '10/s'"):
        interval_of("ten per second")
    with pytest.raises(ValueError, match="unit"):
        interval_of("10/d")


def test_each_reservation_gets_its_own_later_slot(any_store: ResultStore) -> None:
    # Compared as absolute slot times: on a busy machine the calls themselves may be tens of
    # milliseconds apart, which shortens each later delay but not the slot it points to.
    # A store reads its clock somewhere inside the call, so each slot is known to within the
    # call's own duration (a commit on a busy disk can take tens of ms).
    slots, delays, spans = [], [], []
    for _ in range(4):
        before = time.time()
        delays.append(any_store.reserve_rate_slot("tasks.send_mail", 0.5))
        after = time.time()
        slots.append((before + after) / 2 + delays[-1])
        spans.append(after - before)
    assert delays[0] < 0.05
    for i in range(1, len(slots)):
        assert slots[i] - slots[i - 1] == pytest.approx(0.5, abs=0.01 + (spans[i] + spans[i - 1]) / 2)
    assert any_store.reserve_rate_slot("tasks.other", 0.5) < 0.05  # keys are independent


def test_time_limit_precedence() -> None:
    app = Celeriac("limits", broker="memory://limits", backend="memory://limits", set_as_current=False)
    app.conf.task_time_limit, app.conf.task_soft_time_limit = 100, 90

    @app.task(time_limit=10)
    def own() -> None: ...

    @app.task
    def plain() -> None: ...

    assert limits_for(plain, Context(timelimit=(None, None)), app.conf) == (90, 100)
    assert limits_for(own, Context(timelimit=(None, None)), app.conf) == (90, 10)
    assert limits_for(own, Context(timelimit=[2, 1.5]), app.conf) == (1.5, 2)  # (hard, soft) as Celery sends
    app.conf.task_time_limit = app.conf.task_soft_time_limit = None
    assert limits_for(plain, Context(timelimit=None), app.conf) == (None, None)


@pytest.mark.timeout(30)
def test_a_task_returning_as_its_hard_limit_fires_leaves_its_end_to_the_watchdog() -> None:
    """The watchdog records the task's FAILURE and ends the process; a task that returns in that
    moment must not also finish (two outcomes written into one batch): its stop() waits."""
    import signal
    import threading

    from celeriac.worker.limits import ProcessLimiter

    taking_over, recorded = threading.Event(), threading.Event()

    def on_hard_limit(hard: float) -> None:  # the real one ends the process; this one returns
        taking_over.set()
        time.sleep(0.3)
        recorded.set()

    previous = signal.getsignal(signal.SIGALRM)
    try:
        limiter = ProcessLimiter(on_hard_limit)
        limiter.start(None, 0.05)
        assert taking_over.wait(10)
        limiter.stop()  # the task "returns" while the watchdog is recording its end
        assert recorded.is_set()
        started = time.monotonic()
        limiter.start(None, 60)  # a task after that (only when the watchdog did not end the process)
        limiter.stop()  # returns at once: nothing fired
        assert time.monotonic() - started < 5
    finally:
        signal.signal(signal.SIGALRM, previous)
