"""Delivery guarantees with real processes: kill -9, long tasks, restarts, shared files."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from celeriac import states
from celeriac.brokers import Outgoing
from helpers import wait_until


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _all_succeeded(results: list[Any]) -> bool:
    metas = results[0].app.backend.get_many([r.id for r in results])
    return len(metas) == len(results) and all(m["status"] == states.SUCCESS for m in metas.values())


def _wait_all_success(results: list[Any], timeout: float) -> None:
    wait_until(lambda: _all_succeeded(results), timeout, interval=0.1,
               message=f"all {len(results)} tasks SUCCESS")


@pytest.mark.parametrize("target", ["group", "supervisor"])
def test_kill_9_worker_mid_run_loses_nothing(tasks: Any, start_worker: Any, tmp_path: Path, target: str) -> None:
    trace = tmp_path / "trace"
    results = [tasks.work.delay(str(trace), i, 0.02) for i in range(200)]
    first = start_worker("-c", "2")
    wait_until(lambda: len(_lines(trace)) >= 40, 20, message="40 tasks done")
    if target == "group":
        first.kill(signal.SIGKILL)
    else:  # only the supervisor: its children must die with it and not keep working
        os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait(10)
    assert len(_lines(trace)) < 200, "the kill came too late to test anything"
    start_worker("-c", "2")
    _wait_all_success(results, 60)
    assert sorted(set(map(int, _lines(trace)))) == list(range(200))
    assert [r.get(timeout=1) for r in results] == list(range(200))


def test_kill_9_pool_child_mid_run_loses_nothing(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    results = [tasks.work.delay(str(trace), i, 0.02) for i in range(200)]
    worker = start_worker("-c", "2")
    wait_until(lambda: len(_lines(trace)) >= 40, 20, message="40 tasks done")
    children = worker.children()
    assert len(children) == 2, children
    os.kill(children[0], signal.SIGKILL)
    worker.wait_for(r"exited unexpectedly", 10)
    _wait_all_success(results, 60)
    assert sorted(set(map(int, _lines(trace)))) == list(range(200))
    assert worker.proc.poll() is None  # the worker itself kept serving
    wait_until(lambda: len(worker.children()) == 2, 10, message="replacement child")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_long_task_on_live_worker_is_not_redelivered(tasks: Any, start_worker: Any, tmp_path: Path,
                                                     broker_kind: str) -> None:
    """Minutes of work on a worker whose lease is 3 s: heartbeats keep it, nobody else runs it."""
    seconds = 120 if broker_kind == "redis" else 30  # issue 4 asks 2 minutes on Redis, issue 3 30 s
    trace = tmp_path / "trace"
    first = start_worker("-c", "1", "-n", "first@host")
    result = tasks.sleep_then_record.delay(str(trace), "long", seconds)
    wait_until(lambda: "start long" in trace.read_text() if trace.exists() else False, 10, message="start")
    second = start_worker("-c", "1", "-n", "second@host")
    assert result.get(timeout=seconds + 60) == "long"
    lines = trace.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["start", "end"], lines
    assert first.proc.poll() is None and second.proc.poll() is None


def test_delayed_task_survives_worker_restart_and_runs_once(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    first = start_worker("-c", "1")  # up before the task is sent: a slow start cannot eat its countdown
    sent = time.time()
    result = tasks.record.apply_async((str(trace), "delayed"), countdown=6)
    time.sleep(1)  # the worker is up while the task waits in the broker
    first.kill(signal.SIGKILL)
    first.proc.wait(10)
    assert time.time() < sent + 6, "the machine stalled past the countdown: the test shows nothing"
    assert not trace.exists()
    second = start_worker("-c", "2")
    assert result.get(timeout=30) == "delayed"
    ran_at = float(trace.read_text().split()[1])
    assert ran_at >= sent + 6
    time.sleep(1)
    assert len(trace.read_text().splitlines()) == 1  # once
    assert second.proc.poll() is None


def test_two_workers_and_c2_share_one_file_without_duplicates(tasks: Any, start_worker: Any,
                                                              tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    a = start_worker("-c", "2", "-n", "a@host")
    b = start_worker("-c", "2", "-n", "b@host")
    results = [tasks.work.delay(str(trace), i, 0) for i in range(1000)]
    _wait_all_success(results, 90)
    values = list(map(int, _lines(trace)))
    assert sorted(values) == list(range(1000)), "a task ran twice or not at all"
    for worker in (a, b):
        assert "database is locked" not in worker.output.lower(), worker.output
        assert "Traceback" not in worker.output, worker.output


def test_poison_message_goes_to_dead_letters_after_bounded_deliveries(tasks: Any, start_worker: Any) -> None:
    worker = start_worker("-c", "1")
    poison = tasks.kill_self.delay()
    from celeriac.exceptions import WorkerLostError
    with pytest.raises(WorkerLostError, match="delivered 6 times"):
        poison.get(timeout=60)
    letters = wait_until(tasks.app.broker.dead_letters, 10, message="a dead letter")
    assert len(letters) == 1 and "kills its worker" in letters[0].reason
    assert tasks.add.delay(2, 2).get(timeout=10) == 4
    assert worker.proc.poll() is None


def test_garbage_and_refused_content_go_to_dead_letters(tasks: Any, start_worker: Any) -> None:
    worker = start_worker("-c", "1")
    tasks.app.broker.publish([Outgoing("celery", b"\x00\xffnot a message at all")])
    from celeriac import protocol
    msg = protocol.build_task_message("pickled-id", "tasks_app.add", (1, 2), {}, serializer="pickle")
    tasks.app.broker.publish([Outgoing("celery", protocol.pack(msg))])
    refused = tasks.add.AsyncResult("pickled-id")
    from celeriac.exceptions import ContentDisallowed
    with pytest.raises(ContentDisallowed):
        refused.get(timeout=10)
    wait_until(lambda: len(tasks.app.broker.dead_letters()) == 2, 10, message="2 dead letters")
    reasons = sorted(d.reason for d in tasks.app.broker.dead_letters())
    assert reasons[0].startswith("cannot decode body") and "accept_content" in reasons[0]
    assert reasons[1].startswith("cannot decode message")
    assert tasks.add.delay(3, 3).get(timeout=10) == 6
    assert worker.proc.poll() is None


def test_warm_shutdown_finishes_running_and_gives_back_prefetched(tasks: Any, start_worker: Any,
                                                                   tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    worker = start_worker("-c", "1", "--prefetch-multiplier", "4")
    running = tasks.sleep_then_record.delay(str(trace), "running", 2)
    waiting = [tasks.work.delay(str(trace), i, 0) for i in range(3)]
    wait_until(lambda: "start running" in trace.read_text() if trace.exists() else False, 10, message="start")
    assert worker.terminate(30) == 0
    assert running.state == states.SUCCESS  # finished, not abandoned
    assert all(r.state == states.PENDING for r in waiting)
    start_worker("-c", "1")
    assert [r.get(timeout=10) for r in waiting] == [0, 1, 2]


def test_cold_shutdown_gives_running_task_back(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    worker = start_worker("-c", "1")
    running = tasks.sleep_then_record.delay(str(trace), "cold", 3)
    wait_until(lambda: "start cold" in trace.read_text() if trace.exists() else False, 10, message="start")
    worker.proc.send_signal(signal.SIGTERM)
    worker.wait_for("warm shutdown", 5)
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(15) == 0
    assert running.state == states.PENDING
    start_worker("-c", "1")
    assert running.get(timeout=20) == "cold"
