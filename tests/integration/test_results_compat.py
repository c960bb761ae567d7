"""Celery's result semantics on a real worker process, on every broker: what get() raises for
failed group/chord/chain members, the shapes of nested results, ResultSet, ignored results
and the backend methods Celery code calls."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from celeriac import AsyncResult, GroupResult, chain, chord, group, states
from celeriac.exceptions import ChordError
from celeriac.result import ResultSet
from helpers import wait_until


def test_failures_raise_the_failed_members_own_error(tasks: Any, start_worker: Any) -> None:
    start_worker("-c", "2")
    g = group(tasks.add.s(1, 1), tasks.fail.si("member broke"), tasks.add.s(2, 2)).delay()
    with pytest.raises(ValueError, match="member broke"):
        g.get(timeout=20)
    values = g.join(timeout=20, propagate=False)
    assert values[0] == 2 and isinstance(values[1], ValueError) and values[2] == 4

    c = chord([tasks.add.s(1, 1), tasks.fail.si("header broke")], tasks.tsum.s()).delay()
    with pytest.raises(ValueError, match="header broke"):  # as in Celery: the header task's error
        c.get(timeout=20)
    with pytest.raises(ChordError, match="header broke"):  # the body's stored result, by id alone
        AsyncResult(c.id, app=tasks.app).get(timeout=20)

    r = (tasks.add.s(1, 1) | tasks.fail.si("step broke") | tasks.add.s(1)).delay()
    with pytest.raises(ValueError, match="step broke"):
        r.get(timeout=20)

    nested = group(group(tasks.add.s(1, 1), tasks.fail.si("inner broke")), tasks.add.s(3, 3)).delay()
    with pytest.raises(ValueError, match="inner broke"):
        nested.get(timeout=20)


def test_result_shapes_result_sets_and_ignored_results(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    start_worker("-c", "2")
    nested = group(group(tasks.add.s(1, 1), tasks.add.s(2, 2)), tasks.add.s(3, 3)).delay()
    assert isinstance(nested.results[0], GroupResult) and len(nested.results[0]) == 2
    assert nested.get(timeout=20) == [[2, 4], 6]
    r = chain(tasks.add.s(1, 1), group(tasks.add.s(1), tasks.add.s(2))).delay()
    assert isinstance(r, GroupResult) and r.get(timeout=20) == [3, 4]

    rs = ResultSet([tasks.add.delay(1, 2), tasks.mul.delay(2, 3)])
    rs.add(tasks.add.delay(5, 5))
    assert rs.get(timeout=20) == [3, 6, 10] and rs.completed_count() == 3

    marker = tmp_path / "ran"
    quiet = tasks.fire_and_forget.delay(str(marker))
    started = time.monotonic()
    assert quiet.ignored and quiet.get() is None  # returns at once, never blocks
    assert time.monotonic() - started < 1
    wait_until(marker.exists, 20, message="the ignored task ran")

    done = tasks.add.delay(20, 22)
    assert done.get(timeout=20) == 42
    backend = tasks.app.backend
    backend.ensure_chords_allowed()
    meta = backend.get_task_meta(done.id)
    assert meta["status"] == states.SUCCESS and meta["result"] == 42
    backend.store_result("progress-1", {"done": 1}, "PROGRESS")
    assert AsyncResult("progress-1", app=tasks.app).info == {"done": 1}
    backend.forget(done.id)
    assert backend.get_state(done.id) == states.PENDING
