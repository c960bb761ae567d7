"""Task and worker events from real worker processes, received the way monitors receive them.

Every event type is produced by a real `celeriac worker -E` (and a client with
task_send_sent_event) and received through `app.events.Receiver`, on every broker; the
live monitor is checked on screen under tmux; a receiver that does not read never slows a
worker down.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from helpers import WorkerProcess, celeriac_bin, wait_until

pytestmark = pytest.mark.timeout(120)


class Collector:
    """A Receiver running in a thread, keeping every event it gets."""

    def __init__(self, app: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.receiver = app.events.Receiver(app.connection(), handlers={"*": self._keep})
        self.receiver.subscribe()  # from now on: nothing sent after this line is missed
        self.thread = threading.Thread(target=self.receiver.capture, daemon=True)
        self.thread.start()

    def _keep(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, kind: str, uuid: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e["type"] == kind and (uuid is None or e.get("uuid") == uuid)]

    def wait(self, kind: str, uuid: str | None = None, timeout: float = 20.0) -> dict[str, Any]:
        found = wait_until(lambda: self.of(kind, uuid), timeout, message=f"{kind} event for {uuid or 'anyone'}")
        return found[0]  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.receiver.should_stop = True
        self.thread.join(5)


@pytest.fixture
def collector(tasks: Any) -> Any:
    tasks.app.conf.task_send_sent_event = True
    made = Collector(tasks.app)
    yield made
    made.stop()
    tasks.app.conf.task_send_sent_event = False


def test_every_event_type_arrives_with_celerys_fields(broker_kind: str, tasks: Any, collector: Collector,
                                                      start_worker: Callable[..., WorkerProcess],
                                                      tmp_path: Path) -> None:
    worker = start_worker("-E", "-c", "2")
    online = collector.wait("worker-online")
    assert online["hostname"].startswith("celeriac@") and online["sw_ident"] == "celeriac"
    assert online["freq"] > 0 and isinstance(online["timestamp"], float) and "clock" in online

    ok = tasks.add.delay(2, 3)
    bad = tasks.fail.delay("exploded")
    retried = tasks.flaky.delay(str(tmp_path / "flaky"), 1)
    rejected = tasks.rejects.delay()
    expired = tasks.add.apply_async((1, 1), expires=-1)
    assert ok.get(timeout=20) == 5
    assert retried.get(timeout=20) == 1

    sent = collector.wait("task-sent", ok.id)
    assert sent["name"] == "tasks_app.add" and sent["args"] == "(2, 3)" and sent["kwargs"] == "{}"
    assert sent["queue"] == "celery" and sent["retries"] == 0 and sent["root_id"] == ok.id
    received = collector.wait("task-received", ok.id)
    assert received["name"] == "tasks_app.add" and received["args"] == "(2, 3)"
    assert received["hostname"] == online["hostname"]
    started = collector.wait("task-started", ok.id)
    assert started["pid"] != online["pid"]  # a pool process, not the supervisor
    succeeded = collector.wait("task-succeeded", ok.id)
    assert succeeded["result"] == "5" and 0 <= succeeded["runtime"] < 5
    assert received["timestamp"] <= started["timestamp"] <= succeeded["timestamp"]

    failed = collector.wait("task-failed", bad.id)
    assert "exploded" in failed["exception"] and "Traceback" in failed["traceback"]
    retry = collector.wait("task-retried", retried.id)
    assert "attempt 0" in retry["exception"]
    wait_until(lambda: len(collector.of("task-succeeded", retried.id)) == 1, 20, message="the retry's success")
    assert len(collector.of("task-received", retried.id)) == 2  # the retry came back as a new delivery
    assert collector.wait("task-rejected", rejected.id)["requeue"] is False
    revoked = collector.wait("task-revoked", expired.id)
    assert revoked["expired"] is True and revoked["terminated"] is False

    beat = wait_until(lambda: [e for e in collector.of("worker-heartbeat") if e.get("processed", 0) >= 4], 20,
                      message="a heartbeat counting the processed tasks")[0]
    assert beat["active"] >= 0 and beat["events_dropped"] == 0 and beat["sw_ver"]
    assert worker.terminate() == 0
    offline = collector.wait("worker-offline")
    assert offline["hostname"] == online["hostname"]


def test_workers_and_beat_send_task_sent_for_what_they_publish(broker_kind: str, tasks: Any, collector: Collector,
                                                               app_env: dict[str, str], tmp_path: Path,
                                                               start_worker: Callable[..., WorkerProcess]) -> None:
    """A chain's next step is published by the worker, a periodic task by beat (on SQLite and
    Redis inside the store's own transaction or script): each sends task-sent once when the
    option is on, as a client does."""
    env = dict(app_env, EVENTS_TEST_SENT="1", BEAT_TEST_SCHEDULE=json.dumps({"every-second": [1, "run_once"]}),
               BEAT_TEST_FILE=str(tmp_path / "ticks.jsonl"))
    start_worker("-E", "-c", "2", env=env)
    collector.wait("worker-online")
    step = (tasks.add.s(1, 1) | tasks.add.s(10)).delay()
    assert step.get(timeout=20) == 12
    first = step.parent
    assert first is not None
    assert collector.wait("task-sent", first.id)["hostname"] != collector.wait("task-sent", step.id)["hostname"]
    from_worker = collector.wait("task-sent", step.id)
    assert from_worker["name"] == "tasks_app.add" and from_worker["parent_id"] == first.id
    assert len(collector.of("task-sent", step.id)) == 1

    beat = WorkerProcess(tmp_path, env, command="beat")
    try:
        beat.wait_for(r"beat \S+: \d+ entr")
        tick = wait_until(lambda: [e for e in collector.of("task-sent") if e.get("name") == "tasks_app.record_tick"],
                          20, message="task-sent for a beat tick")[0]
        collector.wait("task-succeeded", tick["uuid"])
        assert beat.terminate() == 0
    finally:
        beat.stop()

    def announced() -> list[str]:
        return [e["uuid"] for e in collector.of("task-sent") if e.get("name") == "tasks_app.record_tick"]

    ran = {json.loads(line)["id"] for line in (tmp_path / "ticks.jsonl").read_text().splitlines() if line.strip()}
    wait_until(lambda: ran <= set(announced()), 10, message="a task-sent for every tick that ran")
    assert len(announced()) == len(set(announced())), f"a tick's task-sent came twice: {announced()}"


@pytest.mark.parametrize("broker_kind", ["sqlite", "redis", "postgres"])
def test_revoked_and_terminated_tasks_send_task_revoked(broker_kind: str, tasks: Any, collector: Collector,
                                                        start_worker: Callable[..., WorkerProcess]) -> None:
    start_worker("-E", "-c", "1")
    collector.wait("worker-online")
    running = tasks.sleepy.delay(30)
    collector.wait("task-started", running.id)
    running.revoke(terminate=True)
    event = collector.wait("task-revoked", running.id)
    assert event["terminated"] is True and event["expired"] is False


def test_a_receiver_that_does_not_read_never_slows_the_worker(broker_kind: str, tasks: Any, app_env: dict[str, str],
                                                              start_worker: Callable[..., WorkerProcess]) -> None:
    env = dict(app_env, EVENTS_TEST_MAX_LEN="300")
    tasks.app.conf.broker_transport_options = {"events_max_len": 300}
    tasks.app._reset_connections()
    try:
        idle = tasks.app.events.Receiver(tasks.app.connection(), handlers={})
        idle.subscribe()  # subscribed, then never reads while 2,000 tasks run
        start_worker("-E", "-c", "2", env=env)
        started = time.monotonic()
        results = [tasks.add.delay(i, i) for i in range(2000)]
        assert [r.get(timeout=60) for r in results[-5:]] == [2 * i for i in range(1995, 2000)]
        wait_until(lambda: all(r.ready() for r in results), 60, message="all 2,000 tasks")
        elapsed = time.monotonic() - started
        assert elapsed < 45, f"2,000 tasks took {elapsed:.1f}s with events on"
        events = list(idle.itercapture(timeout=3))
        # The stream kept only its newest events (SQLite: 300 rows; Redis: 300 events' worth of
        # batches, at least each process's last batch; RabbitMQ: the reader's queue, bounded in
        # bytes): the reader gets those, not the backlog of the 6,000+ events the 2,000 tasks
        # sent (the last batches may still be arriving), and counts what it lost.
        assert any(e["type"] == "task-succeeded" for e in events)
        assert 0 < len(events) < 3000
        assert idle.missed > 3000
    finally:
        tasks.app.conf.broker_transport_options = {}
        tasks.app._reset_connections()


@pytest.mark.parametrize("broker_kind", ["sqlite", "redis", "postgres"])
def test_events_dump_prints_one_json_object_per_event(broker_kind: str, tasks: Any, app_env: dict[str, str],
                                                      start_worker: Callable[..., WorkerProcess],
                                                      tmp_path: Path) -> None:
    start_worker("-E", "-c", "1")
    dump = subprocess.Popen([celeriac_bin(), "-A", "tasks_app", "events", "--dump", "--json", "--task",
                             "tasks_app.add", "--limit", "3"], cwd=tmp_path, env=app_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        # The dump subscribes as it starts: keep sending until it has seen a whole task.
        deadline = time.monotonic() + 30
        while dump.poll() is None and time.monotonic() < deadline:
            tasks.add.delay(20, 22).get(timeout=10)
            tasks.fail.delay("not shown").get(timeout=10, propagate=False)
        out, err = dump.communicate(timeout=10)
    finally:
        if dump.poll() is None:
            dump.kill()
    assert dump.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 3
    assert all(e["type"] in ("task-received", "task-started", "task-succeeded") for e in lines)
    assert all(e["uuid"] for e in lines)
    assert not any("not shown" in json.dumps(e) for e in lines)


def test_status_lists_live_workers(broker_kind: str, app_env: dict[str, str],
                                   start_worker: Callable[..., WorkerProcess], tmp_path: Path) -> None:
    def status() -> subprocess.CompletedProcess[str]:
        return subprocess.run([celeriac_bin(), "-A", "tasks_app", "status"], cwd=tmp_path, env=app_env,
                              capture_output=True, text=True, timeout=60)

    none = status()
    assert none.returncode == 1 and "No worker is alive" in none.stdout
    worker = start_worker("-n", "statusnode@%h", "-c", "1")
    alive = status()
    assert alive.returncode == 0, alive.stderr
    assert "statusnode@" in alive.stdout and "1 node online." in alive.stdout
    assert f"pid {worker.proc.pid}" in alive.stdout
    assert worker.terminate() == 0
    gone = status()  # a worker that stopped takes its heartbeat lease with it
    assert gone.returncode == 1 and "No worker is alive" in gone.stdout, gone.stdout


@pytest.mark.parametrize("broker_kind", ["sqlite", "redis"])
def test_live_monitor_shows_workers_and_tasks_on_screen(broker_kind: str, tasks: Any, app_env: dict[str, str],
                                                        start_worker: Callable[..., WorkerProcess],
                                                        tmp_path: Path) -> None:
    """What a person sees: the monitor runs in a real terminal (tmux) and the screen is read back."""
    if shutil.which("tmux") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tmux is missing (scripts/test.sh installs it when run as root)")
        pytest.skip("tmux is not installed")
    session = f"celeriac-monitor-{os.getpid()}-{broker_kind}"
    env_args = [arg for key in ("CELERIAC_BROKER_URL", "CELERIAC_RESULT_BACKEND", "PYTHONPATH")
                for arg in ("-e", f"{key}={app_env[key]}")]
    # A plain 80x24 terminal: what matters (ids, names, states, the exception) must fit in it.
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", *env_args,
                    "-c", str(tmp_path), f"{celeriac_bin()} -A tasks_app events --refresh 0.2"], check=True)
    subprocess.run(["tmux", "resize-window", "-t", session, "-x", "80", "-y", "24"], capture_output=True)

    def screen() -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                              text=True).stdout

    try:
        wait_until(lambda: "celeriac events" in screen(), 20, message="the monitor on screen")
        start_worker("-E", "-n", "monitored@%h", "-c", "1")
        ok = tasks.add.delay(40, 2)
        bad = tasks.fail.delay("shown on screen")
        assert ok.get(timeout=20) == 42
        bad.get(timeout=20, propagate=False)

        def shows_everything() -> bool:
            text = screen()
            return all(s in text for s in ("monitored@", "online", "tasks_app.add", "SUCCESS", "tasks_app.fail",
                                           "FAILURE", "shown on screen", ok.id[:8], bad.id[:8]))

        try:
            wait_until(shows_everything, 20, message="workers and tasks on the screen")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- screen ---\n{screen()}") from None
        assert "1 worker(s) online" in screen()
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
