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
    slots, delays = [], []
    for _ in range(4):
        before = time.time()
        delays.append(any_store.reserve_rate_slot("tasks.send_mail", 0.5))
        slots.append((before + time.time()) / 2 + delays[-1])
    assert delays[0] < 0.05
    for previous, later in zip(slots, slots[1:], strict=False):
        assert later - previous == pytest.approx(0.5, abs=0.05)
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
