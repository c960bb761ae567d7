"""Unique tasks as canvas members, on real workers, every broker.

A member whose call is already pending is not run again: it follows the pending task and
takes its outcome, so the workflow around it goes on with the one run's result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from celeriac import chain, chord, group, states


def _runs(marker: Path) -> int:
    return marker.read_text().count("run") if marker.exists() else 0


@pytest.mark.timeout(120)
def test_group_members_follow_the_pending_call_and_each_other(tasks: Any, start_worker: Any,
                                                             tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    first = tasks.unique_work.delay(str(marker), 0.5)  # pending before the group is sent
    members = group(tasks.unique_work.s(str(marker), 0.5), tasks.unique_work.s(str(marker), 0.5),
                    tasks.add.s(1, 1)).apply_async()
    assert len({r.id for r in members.results} | {first.id}) == 4  # each member keeps its own id
    start_worker("-c", "3")
    assert members.get(timeout=60) == [1, 1, 2]
    assert first.get(timeout=10) == 1
    assert _runs(marker) == 1  # one run answered all three
    assert all(r.state == states.SUCCESS for r in members.results)


@pytest.mark.timeout(120)
def test_a_chain_goes_on_with_the_pending_calls_result(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    first = tasks.unique_work.delay(str(marker), 0.5)
    flow = chain(tasks.unique_work.s(str(marker), 0.5), tasks.add.s(10)).apply_async()
    start_worker("-c", "2")
    assert flow.get(timeout=60) == 11
    assert first.get(timeout=10) == 1 and _runs(marker) == 1


@pytest.mark.timeout(120)
def test_a_chord_counts_a_following_member(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    tasks.unique_work.delay(str(marker), 0.5)
    total = chord([tasks.unique_work.s(str(marker), 0.5), tasks.add.s(2, 2)], tasks.tsum.s()).apply_async()
    start_worker("-c", "2")
    assert total.get(timeout=60) == 5
    assert _runs(marker) == 1


@pytest.mark.timeout(120)
def test_a_follower_takes_the_failure_too(tasks: Any, start_worker: Any) -> None:
    failing = tasks.unique_fail.delay()
    members = group(tasks.unique_fail.s(), tasks.add.s(2, 3)).apply_async()
    start_worker("-c", "2")
    with pytest.raises(ValueError, match="unique and failing"):
        failing.get(timeout=30)
    with pytest.raises(ValueError, match="unique and failing"):
        members.results[0].get(timeout=30)
    assert members.results[1].get(timeout=30) == 5


@pytest.mark.timeout(120)
def test_a_lone_signature_answers_with_the_pending_task(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    first = tasks.unique_work.delay(str(marker), 0.0)
    assert tasks.unique_work.s(str(marker), 0.0).delay().id == first.id  # as task.delay() does
    start_worker("-c", "1")
    assert first.get(timeout=30) == 1 and _runs(marker) == 1


@pytest.mark.timeout(120)
def test_a_follower_runs_itself_when_the_holder_left_no_result(tasks: Any, start_worker: Any,
                                                               tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    quiet = tasks.unique_work.apply_async((str(marker), 0.3), ignore_result=True)  # holds the key, stores nothing
    members = group(tasks.unique_work.s(str(marker), 0.0)).apply_async()
    assert members.results[0].id != quiet.id
    start_worker("-c", "2")
    assert members.get(timeout=60) == [2]  # it waited for the holder, found no result, then ran
    assert _runs(marker) == 2
