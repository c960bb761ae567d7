"""`inspect` and `control` against real worker processes, on every broker, from Python and the CLI."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from celeriac.exceptions import TimeLimitExceeded
from helpers import celeriac_bin, wait_until


def _cli(app_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([celeriac_bin(), "-A", "tasks_app", *args], env=app_env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.slow
def test_inspect_two_workers(tasks: Any, start_worker: Any, tmp_path: Path, broker_kind: str,
                             app_env: dict[str, str]) -> None:
    # Each worker can hold at most two of the four tasks, so both run one at once whichever fetches first
    # (with the default multiplier of 4, a worker fetching first on a loaded machine took all four).
    start_worker("-c", "1", "-n", "a@host", "--prefetch-multiplier", "2")
    start_worker("-c", "1", "-n", "b@host", "--prefetch-multiplier", "2")
    inspect = tasks.app.control.inspect(timeout=2.0)

    # What is running and waiting, first, while it runs.
    trace, release = tmp_path / "trace", tmp_path / "release"
    long = [tasks.run_until_released.delay(str(trace), f"t{i}", str(release)) for i in range(4)]
    wait_until(lambda: (trace.read_text().count("start") if trace.exists() else 0) == 2, 20, message="2 running")
    seen: dict[str, Any] = {}

    def both_running() -> dict[str, Any] | None:
        # Waiting ends once every worker with a current heartbeat answered; on a loaded machine a
        # heartbeat can be overdue (tasks_app's lease is 3 s) and that worker's answer is missed
        # in one round: each worker's latest answer counts, whichever round it came in.
        seen.update({node: items for node, items in (inspect.active() or {}).items() if items})
        return dict(seen) if sum(len(items) for items in seen.values()) == 2 else None

    active = wait_until(both_running, 30, message="both running tasks in inspect active")
    running = sorted(item["id"] for items in active.values() for item in items)
    assert len(running) == 2 and set(running) <= {r.id for r in long}
    assert all(item["name"] == "tasks_app.run_until_released" for items in active.values() for item in items)
    wait_until(lambda: "2 worker(s) replied." in (out := _cli(app_env, "inspect", "active", "--timeout", "2").stdout)
               and out.count("tasks_app.run_until_released") == 2, 30, message="the CLI's table of both tasks")
    reserved = inspect.reserved()
    if broker_kind == "amqp":  # RabbitMQ cannot list what a consumer holds
        assert all("error" in value for value in reserved.values())
    else:
        waiting = sorted(item["id"] for items in reserved.values() for item in items)
        still_queued = tasks.app.broker.queue_sizes(["celery"])["celery"]["ready"]
        assert not set(waiting) & set(running) and set(waiting) <= {r.id for r in long}
        assert len(waiting) + still_queued == 2, (waiting, still_queued)  # prefetched, or not fetched yet

    assert inspect.ping() == {"a@host": {"ok": "pong"}, "b@host": {"ok": "pong"}}
    registered = inspect.registered()["a@host"]
    assert "tasks_app.add" in registered and "celery.accumulate" not in registered
    assert tasks.app.control.inspect(["b@host"], timeout=2.0).ping() == {"b@host": {"ok": "pong"}}
    stats = inspect.stats()
    assert stats["a@host"]["pool"]["max-concurrency"] == 1 and stats["a@host"]["hostname"] == "a@host"
    assert inspect.scheduled() == {"a@host": [], "b@host": []}
    tasks.app.control.revoke("some-task-id")
    wait_until(lambda: "some-task-id" in (inspect.revoked() or {}).get("a@host", []), 10, message="revoked list")
    out = _cli(app_env, "inspect", "ping", "--json", "--timeout", "2")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"a@host": {"ok": "pong"}, "b@host": {"ok": "pong"}}
    release.touch()  # the two running end; the two waiting run and end at once
    for result in long:
        result.get(timeout=30)


def test_control_commands_change_the_workers(tasks: Any, start_worker: Any, app_env: dict[str, str]) -> None:
    worker = start_worker("-c", "1", "-n", "a@host")
    control = tasks.app.control

    # time_limit: sleepy has none; after the command it is ended at 1 s.
    assert control.time_limit("tasks_app.sleepy", soft=None, hard=1, timeout=2.0)[0]["a@host"]["ok"]
    with pytest.raises(TimeLimitExceeded):
        tasks.sleepy.delay(60).get(timeout=30)

    # rate_limit: 20 adds at 10/s take about 2 s.
    assert control.rate_limit("tasks_app.add", "10/s", timeout=2.0)
    started = time.monotonic()
    assert [r.get(timeout=30) for r in [tasks.add.delay(i, 0) for i in range(20)]] == list(range(20))
    assert time.monotonic() - started >= 1.8
    control.rate_limit("tasks_app.add", None, timeout=2.0)

    # pool_grow / pool_shrink: the pool changes size and keeps serving.
    assert "3 slot(s)" in control.pool_grow(2, timeout=2.0)[0]["a@host"]["ok"]
    assert control.inspect(timeout=2.0).stats()["a@host"]["pool"]["max-concurrency"] == 3
    assert "2 slot(s)" in control.pool_shrink(1, timeout=2.0)[0]["a@host"]["ok"]
    assert [r.get(timeout=30) for r in [tasks.add.delay(i, i) for i in range(30)]] == [i + i for i in range(30)]

    # add_consumer / cancel_consumer: a task on another queue runs once the worker consumes it.
    other = tasks.add.apply_async((5, 5), queue="extra")
    control.add_consumer("extra", timeout=2.0)
    assert other.get(timeout=20) == 10
    control.cancel_consumer("extra", timeout=2.0)
    queues = control.inspect(timeout=2.0).active_queues()["a@host"]
    assert [q["name"] for q in queues] == ["celery"]

    # shutdown, from the CLI: warm, exit status 0.
    out = _cli(app_env, "control", "shutdown", "--timeout", "2")
    assert out.returncode == 0 and "warm shutdown started" in out.stdout, out.stdout + out.stderr
    assert worker.proc.wait(30) == 0


def test_no_worker_replies(tasks: Any, app_env: dict[str, str]) -> None:
    assert tasks.app.control.inspect(timeout=0.3).ping() is None
    out = _cli(app_env, "inspect", "ping", "--timeout", "0.3")
    assert out.returncode == 1 and "No worker replied within 0.3s" in out.stderr


def test_live_workers_from_heartbeats(tasks: Any, start_worker: Any) -> None:
    worker = start_worker("-c", "1", "-n", "beat@host")
    live = tasks.app.control.live_workers()
    assert [info["hostname"] for info in live.values()] == ["beat@host"]
    started = time.monotonic()
    assert tasks.app.control.inspect(timeout=5.0).ping() == {"beat@host": {"ok": "pong"}}
    assert time.monotonic() - started < 3.0  # every live worker answered: no waiting out the timeout
    worker.terminate()
    assert tasks.app.control.live_workers() == {}  # a clean stop says goodbye at once
