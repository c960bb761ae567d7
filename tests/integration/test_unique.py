"""Unique tasks on real workers, every broker: one task per key while it is pending."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from celeriac import states
from celeriac.exceptions import TimeoutError
from helpers import wait_until

CALLER = """
import sys, tasks_app
r = tasks_app.unique_work.delay(sys.argv[1], 1.0)
print(r.id)
"""


@pytest.mark.timeout(120)
def test_twenty_processes_calling_at_once_create_one_task(tasks: Any, start_worker: Any, app_env: dict[str, str],
                                                          tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    callers = [subprocess.Popen([sys.executable, "-c", CALLER, str(marker)], env=app_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(20)]
    outputs = [c.communicate(timeout=60) for c in callers]
    assert all(c.returncode == 0 for c in callers), [err for _, err in outputs]
    ids = {out.strip() for out, _ in outputs}
    assert len(ids) == 1, ids  # every caller got the one task's id
    start_worker("-c", "2")
    assert tasks.unique_work.AsyncResult(ids.pop()).get(timeout=30) == 1
    assert marker.read_text().count("run") == 1  # and it ran once


@pytest.mark.timeout(120)
def test_the_key_is_held_while_queued_and_running_and_freed_when_done(tasks: Any, start_worker: Any,
                                                                      tmp_path: Path) -> None:
    marker = str(tmp_path / "runs")
    first = tasks.unique_work.delay(marker, 1.5)
    assert tasks.unique_work.delay(marker, 1.5).id == first.id  # queued
    start_worker("-c", "2")
    wait_until(lambda: os.path.exists(marker), 20, message="the task started")
    assert tasks.unique_work.delay(marker, 1.5).id == first.id  # running
    other = tasks.unique_work.delay(marker + "-other", 0.0)  # other arguments: another key
    assert other.id != first.id
    assert first.get(timeout=30) >= 1 and other.get(timeout=30) == 1
    again = tasks.unique_work.delay(marker, 1.5)  # done: the same call is a new task
    assert again.id != first.id
    assert again.get(timeout=30) >= 2


@pytest.mark.timeout(120)
def test_a_scheduled_task_holds_its_key(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    marker = str(tmp_path / "runs")
    start_worker("-c", "2")
    first = tasks.unique_work.apply_async((marker, 0.0), countdown=2)
    assert tasks.unique_work.delay(marker, 0.0).id == first.id
    assert first.get(timeout=30) == 1


@pytest.mark.timeout(120)
def test_a_retry_keeps_the_key_and_a_failure_frees_it(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    marker = str(tmp_path / "retries")
    start_worker("-c", "2")
    first = tasks.unique_retry_once.delay(marker)
    wait_until(lambda: first.state == states.RETRY, 20, message="the first attempt to retry")
    assert tasks.unique_retry_once.delay(marker).id == first.id  # between attempts
    assert first.get(timeout=30) == "done"
    failing = tasks.unique_fail.delay()
    with pytest.raises(ValueError):
        failing.get(timeout=30)
    assert tasks.unique_fail.delay().id != failing.id


@pytest.mark.timeout(120)
def test_key_from_a_function_of_the_arguments_and_per_call_keys(tasks: Any, start_worker: Any) -> None:
    first = tasks.unique_by_account.delay(account="acme", amount=1)
    assert tasks.unique_by_account.delay(account="acme", amount=2).id == first.id  # same account
    other = tasks.unique_by_account.delay(account="globex", amount=3)
    assert other.id != first.id
    call = tasks.add.apply_async((1, 2), unique_key="nightly", unique_for=30)
    assert tasks.add.apply_async((5, 5), unique_key="nightly", unique_for=30).id == call.id
    start_worker("-c", "2")
    assert (first.get(timeout=30), other.get(timeout=30), call.get(timeout=30)) == (1, 3, 3)


@pytest.mark.timeout(120)
def test_the_hold_ends_after_unique_for_even_if_the_task_never_finishes(tasks: Any, tmp_path: Path) -> None:
    # No worker runs it (as after a SIGKILL that lost it for good): the hold ends by itself.
    first = tasks.add.apply_async((1, 1), unique_key="short", unique_for=1)
    assert tasks.add.apply_async((1, 1), unique_key="short", unique_for=1).id == first.id
    wait_until(lambda: tasks.add.apply_async((1, 1), unique_key="short", unique_for=1).id != first.id, 10,
               message="the hold to expire")
    with pytest.raises(TimeoutError):
        first.get(timeout=0.1)


def test_unique_key_without_unique_for_is_a_clear_error(tasks: Any) -> None:
    with pytest.raises(ValueError, match="unique_key= needs unique_for="):
        tasks.add.apply_async((1, 1), unique_key="k")


def _spans(marker: Path) -> list[tuple[float, float]]:
    starts: dict[str, float] = {}
    spans = []
    for kind, i, when in (line.split() for line in marker.read_text().splitlines()):
        if kind == "start":
            starts[i] = float(when)
        else:
            spans.append((starts[i], float(when)))
    return sorted(spans)


@pytest.mark.timeout(120)
def test_a_locked_task_never_runs_twice_at_once_and_waits_in_the_broker(tasks: Any, start_worker: Any,
                                                                        tmp_path: Path) -> None:
    marker = tmp_path / "locked"
    start_worker("-c", "3")
    locked = [tasks.locked_section.delay(str(marker), i) for i in range(4)]
    # The waiting runs hold no pool slot: other work goes through meanwhile.
    assert [r.get(timeout=10) for r in [tasks.add.delay(i, i) for i in range(5)]] == [0, 2, 4, 6, 8]
    assert sorted(r.get(timeout=60) for r in locked) == [0, 1, 2, 3]
    spans = _spans(marker)
    assert len(spans) == 4
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end - 0.001, spans  # one after the other, never overlapping


@pytest.mark.timeout(120)
def test_a_lock_per_key_is_let_go_of_between_retries(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    marker = tmp_path / "retrying"
    start_worker("-c", "2")
    results = [tasks.locked_retry_once.delay(str(marker), "acme") for _ in range(2)]
    assert [r.get(timeout=60) for r in results] == ["acme", "acme"]
    runs = marker.read_text().splitlines()
    assert len(runs) == 4 and sorted(r.split()[1] for r in runs) == ["0", "0", "1", "1"]
