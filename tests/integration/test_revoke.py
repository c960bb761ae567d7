"""Revocation on real worker processes, on every broker: durable, and terminating when asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from celeriac import chord, group, states
from celeriac.exceptions import ChordError, TaskRevokedError
from helpers import wait_until


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_revoked_before_any_worker_started_never_runs(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    doomed = tasks.record.delay(str(trace), "doomed")
    kept = tasks.record.delay(str(trace), "kept")
    doomed.revoke()  # stored durably: the worker below starts after it
    start_worker("-c", "2")
    assert kept.get(timeout=20) == "kept"
    with pytest.raises(TaskRevokedError):
        doomed.get(timeout=20)
    assert doomed.state == states.REVOKED
    assert "doomed" not in _lines(trace)


def test_revoke_of_a_prefetched_task(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    worker = start_worker("-c", "1", "--prefetch-multiplier", "8")
    blocker = tasks.sleep_then_record.delay(str(trace), "blocker", 1.5)
    wait_until(lambda: "start" in _lines(trace), 20, message="blocker started")
    queued = [tasks.record.delay(str(trace), f"q{i}") for i in range(5)]
    app = tasks.app
    app.control.revoke(queued[2].id)
    assert blocker.get(timeout=20) == "blocker"
    for i, result in enumerate(queued):
        if i == 2:
            with pytest.raises(TaskRevokedError):
                result.get(timeout=20)
        else:
            assert result.get(timeout=20) == f"q{i}"
    assert "q2" not in _lines(trace)
    worker.wait_for("revoked and is discarded", 10)  # the log line can trail the result under load


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_terminate_a_running_task(tasks: Any, start_worker: Any, tmp_path: Path, sig: str) -> None:
    trace = tmp_path / "trace"
    worker = start_worker("-c", "2")
    running = tasks.sleep_then_record.delay(str(trace), "long", 30)
    wait_until(lambda: "start" in _lines(trace), 20, message="task started")
    running.revoke(terminate=True, signal=sig)
    with pytest.raises(TaskRevokedError):
        running.get(timeout=20)
    assert running.state == states.REVOKED
    assert "end" not in _lines(trace)
    assert [tasks.add.delay(i, 1).get(timeout=20) for i in range(20)] == [i + 1 for i in range(20)]
    assert worker.proc.poll() is None
    assert _lines(trace).count("start") == 1  # not run again after a SIGKILL either


def test_terminate_in_the_thread_pool(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    start_worker("-P", "thread", "-c", "2")
    running = tasks.spin_marked.delay(str(marker))
    wait_until(marker.exists, 20, message="spin started")
    running.revoke(terminate=True)
    with pytest.raises(TaskRevokedError):
        running.get(timeout=20)
    assert tasks.add.delay(1, 2).get(timeout=20) == 3


def test_revoking_a_group_and_a_chord_header(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    g = group(tasks.record.s(str(trace), f"g{i}") for i in range(5)).apply_async(countdown=1)
    g.revoke()
    c = chord([tasks.add.s(1, 1), tasks.add.s(2, 2)], tasks.tsum.s()).apply_async(countdown=1)
    c.parent.results[0].revoke()
    start_worker("-c", "2")
    with pytest.raises(TaskRevokedError):
        g.get(timeout=20)
    g.join(timeout=20, propagate=False)
    assert all(r.state == states.REVOKED for r in g.results)
    with pytest.raises(TaskRevokedError):  # a revoked header fails the chord: nothing waits forever
        c.get(timeout=20)
    with pytest.raises(ChordError):  # the body's own result
        c.get(timeout=20, follow_parents=False)
    assert not trace.exists()
