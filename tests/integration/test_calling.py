"""The tutorial's calls against a real worker process, on every broker."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, UTC
from pathlib import Path
from typing import Any

import pytest

from celeriac import states
from celeriac.exceptions import TimeoutError
from helpers import wait_until


def test_delay_get_and_states(tasks: Any, start_worker: Any) -> None:
    result = tasks.add.delay(2, 3)
    assert result.state == states.PENDING  # no worker yet
    start_worker("-c", "2")
    assert result.get(timeout=10) == 5
    assert result.state == states.SUCCESS
    assert result.ready() and result.successful() and not result.failed()
    assert result.date_done is not None and result.date_done.tzinfo is not None
    assert result.info == 5


def test_started_state_when_tracked(tasks: Any, start_worker: Any) -> None:
    start_worker("-c", "1")
    result = tasks.slow.delay(1.0)
    wait_until(lambda: result.state == states.STARTED, 10, message="STARTED state")
    assert result.get(timeout=10) == "done"


def test_countdown_and_eta_run_no_earlier(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    start_worker("-c", "2")
    sent = time.time()
    by_countdown = tasks.add.apply_async((1, 1), countdown=2)
    by_eta = tasks.add.apply_async((2, 2), eta=datetime.now(UTC) + timedelta(seconds=2))
    assert by_countdown.get(timeout=15) == 2
    assert by_eta.get(timeout=15) == 4
    done_countdown = by_countdown.date_done.timestamp()
    done_eta = by_eta.date_done.timestamp()
    assert done_countdown >= sent + 2, done_countdown - sent
    assert done_eta >= sent + 2, done_eta - sent
    assert done_countdown < sent + 6  # and not much later


def test_expired_task_is_revoked_and_not_run(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    marker = tmp_path / "expired"
    result = tasks.record.apply_async((str(marker), "x"), expires=datetime.now(UTC) - timedelta(seconds=1))
    start_worker("-c", "1")
    wait_until(lambda: result.state == states.REVOKED, 10, message="REVOKED")
    assert not marker.exists()
    from celeriac.exceptions import TaskRevokedError
    with pytest.raises(TaskRevokedError):
        result.get(timeout=1)


def test_priority_higher_first(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    log = tmp_path / "order"
    for i in range(5):
        tasks.record.apply_async((str(log), f"low{i}"), priority=1)
    for i in range(5):
        tasks.record.apply_async((str(log), f"high{i}"), priority=8)
    worker = start_worker("-c", "1", "--prefetch-multiplier", "1")
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) == 10, 15, message="10 records")
    order = [line.split()[0] for line in log.read_text().splitlines()]
    assert order == [f"high{i}" for i in range(5)] + [f"low{i}" for i in range(5)], (order, worker.output)


def test_queue_routes_to_worker_with_Q(tasks: Any, start_worker: Any) -> None:
    default_worker = start_worker("-c", "1")
    by_option = tasks.add.apply_async((1, 2), queue="special")
    by_task_queue = tasks.routed.delay()
    time.sleep(0.5)  # give the wrong worker a chance to (wrongly) take them
    assert by_option.state == states.PENDING and by_task_queue.state == states.PENDING
    special = start_worker("-c", "1", "-Q", "special", "-n", "special@host")
    assert by_option.get(timeout=10) == 3
    assert by_task_queue.get(timeout=10) == "special"
    assert "special" in special.output and default_worker.proc.poll() is None


def test_apply_runs_in_process(tasks: Any) -> None:
    result = tasks.add.apply((2, 3))
    assert result.get() == 5
    assert result.successful()


def test_send_task_by_name(tasks: Any, start_worker: Any) -> None:
    from celeriac import Celeriac
    start_worker("-c", "1")
    client = Celeriac("client_without_code", set_as_current=False)
    assert client.send_task("tasks_app.add", (2, 3)).get(timeout=10) == 5


def test_failure_state_traceback_and_reraise(tasks: Any, start_worker: Any) -> None:
    start_worker("-c", "1")
    result = tasks.fail.delay("kaput")
    with pytest.raises(ValueError, match="kaput"):
        result.get(timeout=10)
    assert result.state == states.FAILURE and result.failed()
    assert "ValueError: kaput" in (result.traceback or "")
    assert "fail" in (result.traceback or "")
    returned = result.get(timeout=1, propagate=False)
    assert isinstance(returned, ValueError) and returned.args == ("kaput",)
    custom = tasks.fail_custom.delay()
    with pytest.raises(tasks.CustomError) as info:
        custom.get(timeout=10)
    assert info.value.args == ("custom", 42)
    # the worker keeps going
    assert tasks.add.delay(1, 1).get(timeout=10) == 2


def test_on_failure_and_on_success_handlers(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    start_worker("-c", "1")
    bad, good = tmp_path / "bad", tmp_path / "good"
    failed = tasks.handled.delay(marker=str(bad), ok=False)
    with pytest.raises(ValueError):
        failed.get(timeout=10)
    assert bad.read_text() == f"ValueError|{failed.id}|True"
    assert tasks.handled.delay(marker=str(good), ok=True).get(timeout=10) == "fine"
    assert good.read_text() == "success|fine"


def test_get_timeout_raises_celeriac_timeout(tasks: Any) -> None:
    result = tasks.add.delay(1, 1)  # no worker
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        result.get(timeout=0.5)
    assert 0.4 < time.monotonic() - start < 3
    with pytest.raises(builtins_timeout()):
        result.get(timeout=0.1)


def builtins_timeout() -> type[BaseException]:
    import builtins
    return builtins.TimeoutError


def test_forget_and_ignore_result(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    start_worker("-c", "1")
    result = tasks.add.delay(4, 4)
    assert result.get(timeout=10) == 8
    result.forget()
    assert tasks.add.AsyncResult(result.id).state == states.PENDING
    marker = tmp_path / "fired"
    ignored = tasks.fire_and_forget.delay(str(marker))
    wait_until(marker.exists, 10, message="ignored task ran")
    time.sleep(0.2)
    assert tasks.add.AsyncResult(ignored.id).state == states.PENDING  # nothing stored


def test_custom_progress_state(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    start_worker("-c", "1")
    marker = tmp_path / "progress"
    result = tasks.progress.delay(str(marker))
    wait_until(lambda: result.state == "PROGRESS", 10, message="PROGRESS state")
    assert result.info == {"done": 1, "total": 2}
    marker.write_text("go")
    assert result.get(timeout=10) == "finished"


def test_async_tasks_run_concurrently_in_one_process(tasks: Any, start_worker: Any) -> None:
    start_worker("-c", "1")
    assert tasks.add.delay(0, 0).get(timeout=10) == 0  # warm
    started = time.monotonic()
    results = [tasks.async_sleep.delay(1.0, i) for i in range(50)]
    sync_result = tasks.add.delay(20, 22)
    assert [r.get(timeout=20) for r in results] == list(range(50))
    assert sync_result.get(timeout=10) == 42
    elapsed = time.monotonic() - started
    # 50 one-second sleeps in one process: concurrent on the loop, not one after another
    assert elapsed < 5, elapsed


def test_unregistered_task_fails_and_worker_continues(tasks: Any, start_worker: Any) -> None:
    worker = start_worker("-c", "1")
    unknown = tasks.app.send_task("tasks_app.nope", (1,))
    from celeriac.exceptions import NotRegistered
    with pytest.raises(NotRegistered):
        unknown.get(timeout=10)
    again = tasks.app.send_task("tasks_app.nope", (2,))
    with pytest.raises(NotRegistered):
        again.get(timeout=10)
    assert tasks.add.delay(1, 2).get(timeout=10) == 3
    worker.wait_for(r"unregistered task of type 'tasks_app.nope'", 10)  # the log may trail the result
    assert worker.output.count("unregistered task of type 'tasks_app.nope'") == 1  # said once, not per task


def test_unserializable_result_is_a_failure_not_a_hang(tasks: Any, start_worker: Any) -> None:
    start_worker("-c", "1")
    from celeriac.exceptions import EncodeError
    with pytest.raises(EncodeError):
        tasks.unserializable.delay().get(timeout=10)


def test_result_wait_is_event_driven(tasks: Any, start_worker: Any) -> None:
    """A waiting get() does not hammer the store: count queries made while waiting 1 s."""
    backend = tasks.app.backend
    calls = {"n": 0}
    original = backend.get_many

    def counting(ids: Any) -> Any:
        calls["n"] += 1
        return original(ids)

    backend.get_many = counting  # type: ignore[method-assign]
    try:
        with pytest.raises(TimeoutError):
            tasks.add.AsyncResult("never-sent").get(timeout=1.0)
    finally:
        backend.get_many = original  # type: ignore[method-assign]
    assert calls["n"] <= 5, calls
