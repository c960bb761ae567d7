"""What monitors build on (celeriac/events.py State, TaskState, WorkerState, Receiver) and the
monitor itself (celeriac/monitor.py), fed with hand-made event dicts and fake channels.

Time-dependent parts (throughput, worker liveness) use a fake clock or set the received
time of an event; nothing sleeps and hopes.
"""

from __future__ import annotations

import collections
import io
import json
import signal
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest

from celeriac import Celeriac, monitor
from celeriac import events as events_mod
from celeriac.brokers.base import EventChannel, EventSubscription
from celeriac.events import EVENT_TYPES, TASK_EVENT_TYPES, Receiver, State, TaskState, WorkerState, channel_for

T0 = 1_700_000_000.0


def ev(type_: str, uuid_: str | None = "t1", ts: float | None = None, **fields: Any) -> dict[str, Any]:
    """A task event as a worker or client sends it (Celery's field names)."""
    event: dict[str, Any] = {"type": type_, "timestamp": T0 if ts is None else ts, "hostname": "w1@box",
                             "clock": 1, "utcoffset": 0, "pid": 4242}
    if uuid_ is not None:
        event["uuid"] = uuid_
    event.update(fields)
    return event


def wev(type_: str, hostname: str = "w1@box", received: float | None = None, **fields: Any) -> dict[str, Any]:
    """A worker event; `received` is the receiver's local time (local_received)."""
    event: dict[str, Any] = {"type": type_, "hostname": hostname, "timestamp": time.time(), "clock": 1,
                             "utcoffset": 0, "pid": 99, "freq": 2.0, "sw_ident": "celeriac", "sw_ver": "1.0",
                             "sw_sys": "Linux", "loadavg": [0.5, 0.25, 0.1], "active": 0, "processed": 0,
                             "events_dropped": 0}
    if received is not None:
        event["local_received"] = received
    event.update(fields)
    return event


def feed(state: State, *events: dict[str, Any]) -> State:
    for e in events:
        state.event(e)
    return state


class FakeTime:
    """Stands in for the `time` module inside celeriac.events."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return time.monotonic()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime(T0)
    monkeypatch.setattr(events_mod, "time", fake)
    return fake


# --- task states ---

def test_task_sent_is_pending_with_what_the_client_knew() -> None:
    state = feed(State(), ev("task-sent", name="proj.add", args="(1, 2)", kwargs="{'z': 3}", retries=0,
                             eta="2030-01-01T00:00:00+00:00", expires=None, root_id="r1", parent_id="p1",
                             hostname="client:77", pid=77, queue="celery"))
    task = state.tasks["t1"]
    assert isinstance(task, TaskState)
    assert task.state == "PENDING" and not task.ready
    assert (task.name, task.args, task.kwargs, task.retries) == ("proj.add", "(1, 2)", "{'z': 3}", 0)
    assert (task.eta, task.expires, task.root_id, task.parent_id) == ("2030-01-01T00:00:00+00:00", None, "r1", "p1")
    assert task.sent == T0 and task.timestamp == T0
    assert task.worker_pid is None  # the client's pid is not a worker's


@pytest.mark.parametrize("kind, expected, time_field, ready", [
    ("task-sent", "PENDING", "sent", False),
    ("task-received", "RECEIVED", "received", False),
    ("task-started", "STARTED", "started", False),
    ("task-succeeded", "SUCCESS", "succeeded", True),
    ("task-failed", "FAILURE", "failed", True),
    ("task-retried", "RETRY", "retried", False),
    ("task-revoked", "REVOKED", "revoked", True),
    ("task-rejected", "REJECTED", "rejected", True),
])
def test_each_task_event_sets_its_state_and_time(kind: str, expected: str, time_field: str, ready: bool) -> None:
    state = feed(State(), ev(kind, ts=T0 + 5))
    task = state.tasks["t1"]
    assert task.state == expected and task.ready is ready
    assert getattr(task, time_field) == T0 + 5 and task.timestamp == T0 + 5
    others = {"sent", "received", "started", "succeeded", "failed", "retried", "revoked", "rejected"} - {time_field}
    assert all(getattr(task, f) is None for f in others)
    assert set(TASK_EVENT_TYPES) == {"task-sent", "task-received", "task-started", "task-succeeded",
                                     "task-failed", "task-retried", "task-revoked", "task-rejected"}


def test_a_task_through_its_life() -> None:
    state = State()
    feed(state, ev("task-sent", ts=T0, name="proj.add", args="(1, 2)", kwargs="{}", hostname="client:1", pid=1))
    feed(state, ev("task-received", ts=T0 + 1, name="proj.add", args="(1, 2)", kwargs="{}", retries=0))
    task = state.tasks["t1"]
    assert task.state == "RECEIVED" and task.hostname == "w1@box" and task.worker_pid == 4242
    assert (task.name, task.args, task.kwargs) == ("proj.add", "(1, 2)", "{}")
    feed(state, ev("task-started", ts=T0 + 2, pid=4343))
    assert task.state == "STARTED" and task.worker_pid == 4343 and task.name == "proj.add"  # kept: not in the event
    assert state.active_count("w1@box") == 1 and state.active_count("other") == 0
    feed(state, ev("task-succeeded", ts=T0 + 3, result="3", runtime=0.125))
    assert task.state == "SUCCESS" and task.ready
    assert task.result == "3" and task.runtime == 0.125
    assert (task.sent, task.received, task.started, task.succeeded) == (T0, T0 + 1, T0 + 2, T0 + 3)
    assert task.timestamp == T0 + 3
    assert state.active_count("w1@box") == 0
    assert state.task_count == 1 and len(state.tasks) == 1


def test_failure_keeps_exception_and_traceback() -> None:
    state = feed(State(), ev("task-received", name="proj.div"), ev("task-started", ts=T0 + 1),
                 ev("task-failed", ts=T0 + 2, exception="ZeroDivisionError('division by zero')",
                    traceback="Traceback (most recent call last):\n  ...\nZeroDivisionError", runtime=0.5))
    task = state.tasks["t1"]
    assert task.state == "FAILURE" and task.ready and task.failed == T0 + 2
    assert task.exception == "ZeroDivisionError('division by zero')"
    assert task.traceback.startswith("Traceback") and task.runtime == 0.5


def test_retry_keeps_the_exception_and_the_next_attempt_moves_on() -> None:
    state = feed(State(), ev("task-received", name="proj.flaky"), ev("task-started", ts=T0 + 1),
                 ev("task-retried", ts=T0 + 2, exception="OSError('try again')", traceback="tb"))
    task = state.tasks["t1"]
    assert task.state == "RETRY" and not task.ready and task.exception == "OSError('try again')"
    feed(state, ev("task-sent", ts=T0 + 3, retries=1), ev("task-received", ts=T0 + 4, retries=1),
         ev("task-started", ts=T0 + 5), ev("task-succeeded", ts=T0 + 6, result="'ok'"))
    assert task.state == "SUCCESS" and task.retries == 1 and task.result == "'ok'"


def test_revoked_and_rejected_are_final() -> None:
    state = feed(State(), ev("task-received", "a"), ev("task-revoked", "a", ts=T0 + 1, terminated=True),
                 ev("task-received", "b"), ev("task-rejected", "b", ts=T0 + 1, requeue=False))
    assert state.tasks["a"].state == "REVOKED" and state.tasks["a"].ready
    assert state.tasks["b"].state == "REJECTED" and state.tasks["b"].ready


def test_missing_fields_do_not_erase_known_ones() -> None:
    state = feed(State(), ev("task-received", name="proj.add", args="(1,)", root_id="r"),
                 ev("task-started", ts=T0 + 1, name=None, args=None, root_id=None))
    task = state.tasks["t1"]
    assert (task.name, task.args, task.root_id) == ("proj.add", "(1,)", "r")


@pytest.mark.parametrize("late", ["task-sent", "task-received", "task-started", "task-retried"])
@pytest.mark.parametrize("final, expected", [("task-succeeded", "SUCCESS"), ("task-failed", "FAILURE"),
                                             ("task-revoked", "REVOKED"), ("task-rejected", "REJECTED")])
def test_an_older_event_arriving_after_the_end_does_not_reopen_the_task(late: str, final: str,
                                                                        expected: str) -> None:
    state = feed(State(), ev("task-received", ts=T0, name="proj.add"), ev(final, ts=T0 + 10))
    feed(state, ev(late, ts=T0 + 9))
    task = state.tasks["t1"]
    assert task.state == expected
    assert task.timestamp == T0 + 10  # the newest event's time
    feed(state, ev(late, ts=T0 + 10))  # the same time is not newer either
    assert task.state == expected


def test_a_started_event_older_than_success_leaves_success() -> None:
    state = feed(State(), ev("task-succeeded", ts=T0 + 10, result="1"), ev("task-started", ts=T0 + 9))
    task = state.tasks["t1"]
    assert task.state == "SUCCESS" and task.started == T0 + 9 and task.succeeded == T0 + 10


def test_a_newer_event_after_the_end_is_a_new_attempt() -> None:
    # A task redelivered after a failure (acks_late, a lost worker): the newer events win.
    state = feed(State(), ev("task-failed", ts=T0 + 10, exception="WorkerLostError()"),
                 ev("task-received", ts=T0 + 11), ev("task-started", ts=T0 + 12))
    assert state.tasks["t1"].state == "STARTED"


@pytest.mark.parametrize("late, late_ts", [("task-sent", T0), ("task-received", T0 + 1)])
def test_an_older_event_arriving_late_does_not_move_a_running_task_back(late: str, late_ts: float) -> None:
    state = feed(State(), ev("task-started", ts=T0 + 2, name="proj.add"))
    feed(state, ev(late, ts=late_ts, hostname="client:1" if late == "task-sent" else "w1@box"))
    assert state.tasks["t1"].state == "STARTED"


def test_unknown_and_untyped_events_are_counted_only() -> None:
    state = feed(State(), {"type": "custom-thing", "x": 1}, {"no": "type"}, ev("task-received"))
    assert state.event_count == 3
    assert state.counts["custom-thing"] == 1 and state.counts[""] == 1 and state.counts["task-received"] == 1
    assert list(state.tasks) == ["t1"] and state.workers == {}


def test_counts_by_type() -> None:
    state = State()
    for i in range(4):
        feed(state, ev("task-sent", f"u{i}"), ev("task-received", f"u{i}"), ev("task-started", f"u{i}"))
        feed(state, ev("task-succeeded" if i % 2 else "task-failed", f"u{i}", ts=T0 + 1))
    feed(state, wev("worker-online"), wev("worker-heartbeat"), wev("worker-heartbeat"))
    assert state.event_count == 19 and state.task_count == 4
    assert state.counts == collections.Counter({"task-sent": 4, "task-received": 4, "task-started": 4,
                                                "task-succeeded": 2, "task-failed": 2, "worker-online": 1,
                                                "worker-heartbeat": 2})


# --- bounds ---

def test_max_tasks_keeps_memory_bounded() -> None:
    state = State(max_tasks=1000)
    for i in range(25_000):  # 100,000 events
        tid = f"task-{i}"
        state.event(ev("task-sent", tid, ts=T0 + i))
        state.event(ev("task-received", tid, ts=T0 + i, name="proj.add"))
        state.event(ev("task-started", tid, ts=T0 + i))
        state.event(ev("task-succeeded", tid, ts=T0 + i, result="1"))
    assert state.event_count == 100_000 and state.task_count == 25_000
    assert len(state.tasks) == 1000
    assert list(state.tasks) == [f"task-{i}" for i in range(24_000, 25_000)]  # the newest
    assert all(t.state == "SUCCESS" for t in state.tasks.values())


def test_max_tasks_evicts_the_least_recently_updated() -> None:
    state = feed(State(max_tasks=3), ev("task-received", "a"), ev("task-received", "b"), ev("task-received", "c"))
    feed(state, ev("task-started", "a", ts=T0 + 1))  # a is fresh again
    feed(state, ev("task-received", "d"))
    assert list(state.tasks) == ["c", "a", "d"]
    feed(state, ev("task-started", "b", ts=T0 + 2))  # an event of a forgotten task: known again, partly
    assert list(state.tasks) == ["a", "d", "b"] and state.tasks["b"].state == "STARTED"
    assert state.tasks["b"].name is None
    assert state.task_count == 5


# --- workers ---

def test_worker_online_heartbeat_offline() -> None:
    now = time.time()
    state = feed(State(), wev("worker-online", received=now, pid=10, freq=2.0))
    worker = state.workers["w1@box"]
    assert isinstance(worker, WorkerState)
    assert worker.online and worker.alive and worker.status == "online"
    assert (worker.pid, worker.freq, worker.sw_ident, worker.sw_ver, worker.sw_sys) == (10, 2.0, "celeriac", "1.0",
                                                                                          "Linux")
    assert worker.last_heartbeat == now
    feed(state, wev("worker-heartbeat", received=now + 1, active=3, processed=17, events_dropped=5,
                    loadavg=[1.0, 2.0, 3.0]))
    assert (worker.active, worker.processed, worker.events_dropped) == (3, 17, 5)
    assert worker.loadavg == [1.0, 2.0, 3.0] and worker.last_heartbeat == now + 1
    assert state.alive_workers() == [worker]
    feed(state, wev("worker-offline", received=now + 2))
    assert not worker.online and not worker.alive and worker.status == "offline"
    assert state.alive_workers() == [] and "w1@box" in state.workers  # still listed, as offline
    feed(state, wev("worker-heartbeat", received=now + 3))  # back (a restart under the same name)
    assert worker.alive and state.workers["w1@box"] is worker


def test_a_worker_without_local_received_is_stamped_now() -> None:
    event = wev("worker-online")
    before = time.time()
    state = feed(State(), event)
    assert before <= state.workers["w1@box"].last_heartbeat <= time.time()


@pytest.mark.parametrize("freq", [0.5, 2.0, 10.0])
def test_a_worker_is_alive_until_it_misses_two_heartbeats(freq: float) -> None:
    window = freq * events_mod.HEARTBEAT_EXPIRE_FACTOR + 1.0
    now = time.time()
    state = feed(State(), wev("worker-heartbeat", received=now - window + 0.5, freq=freq))
    worker = state.workers["w1@box"]
    assert worker.freq == freq and worker.alive
    worker.last_heartbeat = now - window - 0.5
    assert not worker.alive and worker.status == "offline" and state.alive_workers() == []
    feed(state, wev("worker-heartbeat", received=time.time(), freq=freq))
    assert worker.alive


def test_max_workers_forgets_dead_workers_first() -> None:
    now = time.time()
    state = feed(State(max_workers=3), wev("worker-online", "a", received=now), wev("worker-online", "b",
                                                                                    received=now - 60),
                 wev("worker-online", "c", received=now))
    assert not state.workers["b"].alive
    feed(state, wev("worker-online", "d", received=now))
    assert sorted(state.workers) == ["a", "c", "d"]


def test_max_workers_bounds_the_workers_even_when_all_are_alive() -> None:
    state = State(max_workers=10)
    for i in range(50):
        state.event(wev("worker-online", f"w{i}@box", received=time.time()))
    assert len(state.workers) <= 10


# --- queries ---

def test_throughput_counts_finished_tasks_over_the_window(clock: FakeTime) -> None:
    state = State(window=10.0)
    for i in range(20):
        state.event(ev("task-succeeded", f"s{i}"))
    for i in range(10):
        state.event(ev("task-failed", f"f{i}"))
    for i in range(5):  # not finished: not counted
        state.event(ev("task-retried", f"r{i}"))
        state.event(ev("task-started", f"x{i}"))
        state.event(ev("task-revoked", f"v{i}"))
    assert state.throughput() == pytest.approx(3.0)
    clock.now = T0 + 5
    for i in range(10):
        state.event(ev("task-succeeded", f"later{i}"))
    assert state.throughput() == pytest.approx(4.0)
    clock.now = T0 + 10.5  # the first 30 are out of the window
    assert state.throughput() == pytest.approx(1.0)
    clock.now = T0 + 16
    assert state.throughput() == 0.0
    assert State().throughput() == 0.0


def test_tasks_by_state_and_by_type() -> None:
    state = feed(State(), ev("task-received", "a", name="proj.add"), ev("task-received", "b", name="proj.mul"),
                 ev("task-received", "c", name="other.add"), ev("task-sent", "d"),
                 ev("task-succeeded", "a", ts=T0 + 1), ev("task-failed", "b", ts=T0 + 1))
    assert [t.uuid for t in state.tasks_by_state("SUCCESS")] == ["a"]
    assert [t.uuid for t in state.tasks_by_state("FAILURE")] == ["b"]
    assert [t.uuid for t in state.tasks_by_state("RECEIVED")] == ["c"]
    assert [t.uuid for t in state.tasks_by_state("PENDING")] == ["d"]
    assert state.tasks_by_state("success") == []  # states are upper case
    assert sorted(t.uuid for t in state.tasks_by_type("proj.*")) == ["a", "b"]
    assert sorted(t.uuid for t in state.tasks_by_type("*.add")) == ["a", "c"]
    assert [t.uuid for t in state.tasks_by_type("proj.[m]*")] == ["b"]
    assert [t.uuid for t in state.tasks_by_type("proj.add")] == ["a"]
    assert state.tasks_by_type("PROJ.*") == []  # case-sensitive, as task names
    assert sorted(t.uuid for t in state.tasks_by_type("*")) == ["a", "b", "c"]  # the nameless one is not


def test_itertasks_newest_first_with_limit() -> None:
    state = feed(State(), *[ev("task-received", f"u{i}") for i in range(5)])
    assert [t.uuid for t in state.itertasks()] == ["u4", "u3", "u2", "u1", "u0"]
    assert [t.uuid for t in state.itertasks(limit=2)] == ["u4", "u3"]
    assert list(state.itertasks(limit=0)) == []
    feed(state, ev("task-started", "u1", ts=T0 + 1))  # the latest news first
    assert [t.uuid for t in state.itertasks(limit=3)] == ["u1", "u4", "u3"]


# --- Receiver ---

class FakeSubscription(EventSubscription):
    def __init__(self, batches: Sequence[Sequence[bytes]] = ()) -> None:
        self.batches: collections.deque[list[bytes]] = collections.deque(list(b) for b in batches)
        self.timeouts: list[float] = []
        self.quiet = threading.Event()

    def next_batch(self, timeout: float) -> list[bytes]:
        self.timeouts.append(timeout)
        if self.batches:
            return self.batches.popleft()
        self.quiet.wait(timeout)  # nothing comes: wait out the timeout, as a real stream does
        return []


class FakeChannel(EventChannel):
    def __init__(self, *batches: Sequence[bytes]) -> None:
        self.subscription = FakeSubscription(batches)
        self.subscribed = 0

    def send(self, events: Sequence[bytes]) -> None:
        self.subscription.batches.append(list(events))

    def subscribe(self) -> EventSubscription:
        self.subscribed += 1
        return self.subscription


def body(type_: str, **fields: Any) -> bytes:
    return json.dumps({"type": type_, **fields}).encode()


@pytest.fixture
def app() -> Celeriac:
    name = f"state-{uuid.uuid4().hex}"
    return Celeriac("events", broker=f"memory://{name}", backend=f"memory://{name}", set_as_current=False)


def test_process_calls_the_handler_of_the_type_else_the_catch_all(app: Celeriac) -> None:
    calls: list[tuple[str, Any]] = []
    r = Receiver(app=app, channel=FakeChannel(), handlers={
        "task-failed": lambda e: calls.append(("failed", e.get("uuid"))),
        "*": lambda e: calls.append(("*", e.get("type")))})
    r.process({"type": "task-failed", "uuid": "u"})
    r.process({"type": "task-succeeded"})
    r.process({"type": "something-new"})
    r.process({"no": "type"})
    assert calls == [("failed", "u"), ("*", "task-succeeded"), ("*", "something-new"), ("*", None)]
    quiet = Receiver(app=app, channel=FakeChannel(), handlers={"task-failed": lambda e: calls.append(("x", 1))})
    quiet.process({"type": "task-succeeded"})  # no handler, no catch-all: nothing happens
    assert len(calls) == 4


def test_itercapture_stops_after_limit(app: Celeriac) -> None:
    channel = FakeChannel([body("a", n=0), body("a", n=1)], [body("a", n=2), body("a", n=3)])
    r = Receiver(app=app, channel=channel)
    before = time.time()
    got = list(r.itercapture(limit=3, timeout=5))
    assert [e["n"] for e in got] == [0, 1, 2]
    assert r.received == 3
    assert all(before <= e["local_received"] <= time.time() for e in got)


def test_capture_with_limit_keeps_the_rest_of_the_batch_for_later(app: Celeriac) -> None:
    channel = FakeChannel([body("a", n=i) for i in range(5)])
    r = Receiver(app=app, channel=channel)
    assert [e["n"] for e in r.itercapture(limit=2, timeout=1)] == [0, 1]
    assert [e["n"] for e in r.itercapture(limit=3, timeout=0.3)] == [2, 3, 4]


def test_invalid_json_bodies_are_skipped(app: Celeriac) -> None:
    channel = FakeChannel([b"not json", body("a", n=1), b"\xff\xfe\x00", b"{truncated", body("a", n=2)])
    r = Receiver(app=app, channel=channel)
    assert [e["n"] for e in r.itercapture(limit=2, timeout=5)] == [1, 2]
    assert r.received == 2


@pytest.mark.parametrize("odd", [b"[1, 2]", b"null", b"42", b'"text"'])
def test_json_bodies_that_are_not_objects_are_skipped(app: Celeriac, odd: bytes) -> None:
    r = Receiver(app=app, channel=FakeChannel([odd, body("a", n=1)]))
    assert [e["n"] for e in r.itercapture(limit=1, timeout=2)] == [1]


def test_should_stop_from_a_handler_stops_capture(app: Celeriac) -> None:
    seen: list[int] = []

    def handler(event: dict[str, Any]) -> None:
        seen.append(event["n"])
        if event["n"] == 1:
            r.should_stop = True

    r = Receiver(app=app, channel=FakeChannel([body("a", n=i) for i in range(5)], [body("a", n=9)]),
                 handlers={"*": handler})
    started = time.monotonic()
    r.capture(timeout=5)
    assert seen == [0, 1]
    assert time.monotonic() - started < 1.0


def test_should_stop_from_another_thread_ends_an_idle_capture(app: Celeriac) -> None:
    r = Receiver(app=app, channel=FakeChannel())
    done = threading.Event()
    thread = threading.Thread(target=lambda: (r.capture(), done.set()), daemon=True)
    thread.start()
    r.should_stop = True
    assert done.wait(3), "capture kept running after should_stop"  # within a poll (0.5 s)
    thread.join(1)


def test_itercapture_returns_at_its_timeout_polling_in_short_waits(app: Celeriac) -> None:
    channel = FakeChannel()
    r = Receiver(app=app, channel=channel)
    started = time.monotonic()
    assert list(r.itercapture(timeout=0.3)) == []
    elapsed = time.monotonic() - started
    assert 0.28 <= elapsed < 1.5
    assert channel.subscription.timeouts and max(channel.subscription.timeouts) <= 0.3


def test_subscribe_is_once_and_missed_comes_from_the_subscription(app: Celeriac) -> None:
    channel = FakeChannel([body("a")])
    r = Receiver(app=app, channel=channel)
    assert r.missed == 0  # not subscribed yet
    sub = r.subscribe()
    sub.missed = 7
    assert r.subscribe() is sub and r.missed == 7
    list(r.itercapture(limit=1, timeout=1))
    assert channel.subscribed == 1


def test_a_receiver_subscribed_first_gets_events_sent_before_capture(app: Celeriac) -> None:
    got: list[dict[str, Any]] = []
    r = app.events.Receiver(app.connection(), handlers={"task-succeeded": got.append})
    r.subscribe()
    d = app.events.Dispatcher(hostname="w@h", flush_interval=0.05)
    try:
        d.send("task-succeeded", uuid="early", result="1")
        d.flush()
        r.capture(limit=1, timeout=5)
    finally:
        d.close()
    assert [e["uuid"] for e in got] == ["early"] and got[0]["hostname"] == "w@h"


def test_receiver_and_state_together(app: Celeriac) -> None:
    state = app.events.State()
    r = app.events.Receiver(app.connection(), handlers={"*": state.event})
    r.subscribe()
    channel_for(app).send([json.dumps(e).encode() for e in (
        wev("worker-online"), ev("task-received", name="proj.add"), ev("task-started", ts=T0 + 1),
        ev("task-succeeded", ts=T0 + 2, result="3"))])
    r.capture(limit=4, timeout=5)
    assert state.tasks["t1"].state == "SUCCESS" and state.tasks["t1"].result == "3"
    assert [w.hostname for w in state.alive_workers()] == ["w1@box"]
    assert set(state.counts) <= set(EVENT_TYPES)


# --- monitor: filters ---

def _task(uuid_: str, name: str | None, st: str) -> TaskState:
    return TaskState(uuid_, name=name, state=st)


def test_filters() -> None:
    everything = monitor.Filters()
    assert everything.task is None and everything.states == set()
    assert everything.task_matches(_task("a", None, "PENDING"))
    by_name = monitor.Filters(task="proj.*")
    assert by_name.task_matches(_task("a", "proj.add", "SUCCESS"))
    assert not by_name.task_matches(_task("a", "other.add", "SUCCESS"))
    assert not by_name.task_matches(_task("a", None, "SUCCESS"))  # no name yet: not shown under a name filter
    by_state = monitor.Filters(state="failure, Retry")
    assert by_state.states == {"FAILURE", "RETRY"}
    assert by_state.task_matches(_task("a", "x", "FAILURE")) and by_state.task_matches(_task("a", "x", "RETRY"))
    assert not by_state.task_matches(_task("a", "x", "SUCCESS"))
    both = monitor.Filters(task="*.div", state="FAILURE")
    assert both.task_matches(_task("a", "proj.div", "FAILURE"))
    assert not both.task_matches(_task("a", "proj.div", "SUCCESS"))
    assert not both.task_matches(_task("a", "proj.add", "FAILURE"))


def test_filters_on_events() -> None:
    state = feed(State(), ev("task-received", "a", name="proj.add"), ev("task-failed", "b", name="proj.div"))
    assert monitor.Filters().event_matches(wev("worker-heartbeat"), state)
    assert monitor.Filters().event_matches(ev("task-received", "a"), state)
    assert not monitor.Filters(task="proj.*").event_matches(wev("worker-heartbeat"), state)
    assert not monitor.Filters(state="FAILURE").event_matches(wev("worker-online"), state)
    assert monitor.Filters(task="proj.add").event_matches(ev("task-received", "a"), state)
    assert not monitor.Filters(task="proj.add").event_matches(ev("task-failed", "b"), state)
    assert monitor.Filters(state="failure").event_matches(ev("task-failed", "b"), state)
    assert not monitor.Filters(task="*").event_matches(ev("task-received", "unknown"), state)


# --- monitor: the live view ---

def rendered(renderable: Any) -> str:
    from rich.console import Console
    console = Console(record=True, width=160, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


@pytest.fixture
def busy_state() -> State:
    now = time.time()
    return feed(State(),
                wev("worker-online", "alpha@box", received=now, active=2, processed=10, events_dropped=3),
                wev("worker-online", "beta@box", received=now), wev("worker-offline", "beta@box", received=now),
                ev("task-received", "11111111-aaaa", name="proj.add", hostname="alpha@box"),
                ev("task-succeeded", "11111111-aaaa", ts=T0 + 1, result="42", runtime=0.25,
                   hostname="alpha@box"),
                ev("task-received", "22222222-bbbb", name="proj.div", hostname="alpha@box"),
                ev("task-failed", "22222222-bbbb", ts=T0 + 1, exception="ZeroDivisionError('boom')",
                   hostname="alpha@box"),
                ev("task-received", "33333333-cccc", name="proj.mul", hostname="alpha@box"),
                ev("task-started", "33333333-cccc", ts=T0 + 1, hostname="alpha@box"))


def test_render_shows_workers_tasks_states_and_exceptions(app: Celeriac, busy_state: State) -> None:
    receiver = Receiver(app=app, channel=FakeChannel())
    text = rendered(monitor.render(app, busy_state, monitor.Filters(), receiver, time.time() - 5))
    assert "celeriac events" in text and app.broker.safe_url in text
    assert "1 worker(s) online" in text and f"events {busy_state.event_count}" in text
    assert "missed" not in text
    for hostname in ("alpha@box", "beta@box"):
        assert hostname in text
    assert "online" in text and "offline" in text
    assert "0.50 0.25 0.10" in text  # load average
    for name, st in (("proj.add", "SUCCESS"), ("proj.div", "FAILURE"), ("proj.mul", "STARTED")):
        assert name in text and st in text
    assert "ZeroDivisionError('boom')" in text and "42" in text and "0.250s" in text
    assert "11111111" in text and "11111111-aaaa" not in text  # uuids are shortened
    lines = text.splitlines()
    order = [next(i for i, line in enumerate(lines) if name in line) for name in ("proj.mul", "proj.div", "proj.add")]
    assert order == sorted(order)  # newest first


def test_render_respects_filters_and_shows_missed(app: Celeriac, busy_state: State) -> None:
    receiver = Receiver(app=app, channel=FakeChannel())
    receiver.subscribe().missed = 12
    text = rendered(monitor.render(app, busy_state, monitor.Filters(state="failure"), receiver, time.time()))
    assert "(missed 12)" in text
    assert "filter: * FAILURE" in text
    assert "proj.div" in text and "ZeroDivisionError('boom')" in text
    assert "proj.add" not in text and "proj.mul" not in text
    assert "alpha@box" in text  # workers are always listed
    text = rendered(monitor.render(app, busy_state, monitor.Filters(task="proj.m*"), receiver, time.time()))
    assert "proj.mul" in text and "STARTED" in text
    assert "proj.add" not in text and "proj.div" not in text and "boom" not in text


def test_render_without_workers_and_with_a_short_screen(app: Celeriac) -> None:
    state = feed(State(), *[ev("task-received", f"{i:08d}-x", name=f"job{i:02d}") for i in range(20)])
    text = rendered(monitor.render(app, state, monitor.Filters(), Receiver(app=app, channel=FakeChannel()),
                                   time.time(), height=20))
    assert "no worker events yet" in text and "0 worker(s) online" in text
    shown = [i for i in range(20) if f"job{i:02d}" in text]
    assert shown == list(range(10, 20))  # height 20 - 10 lines of frame - 0 workers: the 10 newest


# --- monitor: dump ---

def test_event_line_formatting() -> None:
    ts = T0 + 0.123
    line = monitor._event_line({
        "type": "task-failed", "hostname": "w1@box", "timestamp": ts, "clock": 3, "utcoffset": 0, "pid": 12,
        "local_received": ts + 1, "uuid": "u1", "exception": "ValueError('x')", "traceback": "Traceback ...",
        "result": None, "args": "", "retries": 0, "runtime": 0.5, "kwargs": {"a": [1]},
        "multi": "line one\nline two"})
    when = datetime.fromtimestamp(ts).strftime("%H:%M:%S.%f")[:-3]
    assert line == (f"{when} task-failed w1@box pid=12 uuid=u1 exception=ValueError('x') retries=0 runtime=0.5 "
                    'kwargs={"a": [1]} multi=line one line two')
    assert "\n" not in line
    long = monitor._event_line({"type": "task-succeeded", "hostname": "h", "timestamp": ts, "result": "x" * 200})
    value = long.split("result=", 1)[1]
    assert len(value) == 80 and value.endswith("…") and value.startswith("x" * 79)
    bare = monitor._event_line({"type": "worker-online"})
    assert bare.endswith(" worker-online None ")


@pytest.fixture
def restore_signals() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


DUMPED = [wev("worker-online", "w1@box"),
          ev("task-received", "a", name="proj.add"), ev("task-started", "a", ts=T0 + 1),
          ev("task-succeeded", "a", ts=T0 + 2, result="3"),
          ev("task-received", "b", name="proj.div"), ev("task-started", "b", ts=T0 + 1),
          ev("task-failed", "b", ts=T0 + 2, exception="ZeroDivisionError('boom')", traceback="Traceback"),
          wev("worker-offline", "w1@box")]


@pytest.fixture(params=["memory", "sqlite"])
def dump_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Celeriac]:
    if request.param == "memory":
        url = f"memory://dump-{uuid.uuid4().hex}"
    else:
        url = f"sqlite:///{tmp_path / 'dump.db'}"
    made = Celeriac("events", broker=url, backend=url, set_as_current=False)
    yield made
    made._reset_connections()


def run_dump(app: Celeriac, monkeypatch: pytest.MonkeyPatch, events: list[dict[str, Any]], *, as_json: bool = False,
             filters: monitor.Filters | None = None, timeout: float = 10.0,
             limit: int | None = None) -> tuple[int, list[str], Receiver]:
    """monitor.dump in this (the main) thread; the events are sent once it has subscribed."""
    subscribed = threading.Event()
    receivers: list[Receiver] = []

    class SignallingReceiver(Receiver):
        def subscribe(self) -> EventSubscription:
            sub = super().subscribe()
            receivers.append(self)
            subscribed.set()
            return sub

    monkeypatch.setattr(monitor, "Receiver", SignallingReceiver)

    def send() -> None:
        if subscribed.wait(10):
            channel_for(app).send([json.dumps(e).encode() for e in events])

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    out = io.StringIO()
    printed = monitor.dump(app, out, as_json, filters or monitor.Filters(), timeout=timeout, limit=limit)
    sender.join(5)
    return printed, out.getvalue().splitlines(), receivers[0]


def test_dump_writes_one_line_per_event(dump_app: Celeriac, monkeypatch: pytest.MonkeyPatch,
                                        restore_signals: None) -> None:
    printed, lines, receiver = run_dump(dump_app, monkeypatch, DUMPED, limit=len(DUMPED))
    assert printed == len(lines) == len(DUMPED)
    assert [line.split()[1] for line in lines] == [e["type"] for e in DUMPED]
    assert "ZeroDivisionError('boom')" in lines[6] and "Traceback" not in lines[6]
    # Ctrl-C / SIGTERM stop a running dump: the handlers it installed set should_stop.
    signal.getsignal(signal.SIGINT)(signal.SIGINT, None)  # type: ignore[operator, misc]
    assert receiver.should_stop


def test_dump_as_json_writes_one_object_per_event(dump_app: Celeriac, monkeypatch: pytest.MonkeyPatch,
                                                  restore_signals: None) -> None:
    printed, lines, _ = run_dump(dump_app, monkeypatch, DUMPED, as_json=True, limit=len(DUMPED))
    assert printed == len(DUMPED)
    objects = [json.loads(line) for line in lines]
    for got, sent in zip(objects, DUMPED, strict=True):
        assert {k: v for k, v in got.items() if k != "local_received"} == sent
        assert isinstance(got["local_received"], float)


def test_dump_stops_at_its_limit(dump_app: Celeriac, monkeypatch: pytest.MonkeyPatch,
                                 restore_signals: None) -> None:
    printed, lines, _ = run_dump(dump_app, monkeypatch, DUMPED, limit=3)
    assert printed == 3 and [line.split()[1] for line in lines] == ["worker-online", "task-received",
                                                                    "task-started"]


@pytest.mark.parametrize("filters, expected", [
    (monitor.Filters(state="failure"), [("task-failed", "b")]),
    (monitor.Filters(task="proj.div"), [("task-received", "b"), ("task-started", "b"), ("task-failed", "b")]),
    (monitor.Filters(task="proj.*", state="SUCCESS,failure"), [("task-succeeded", "a"), ("task-failed", "b")]),
])
def test_dump_prints_only_matching_events(dump_app: Celeriac, monkeypatch: pytest.MonkeyPatch,
                                          restore_signals: None, filters: monitor.Filters,
                                          expected: list[tuple[str, str]]) -> None:
    printed, lines, _ = run_dump(dump_app, monkeypatch, DUMPED, as_json=True, filters=filters, timeout=1.0)
    assert printed == len(expected)
    assert [(o["type"], o["uuid"]) for o in map(json.loads, lines)] == expected


def test_dump_returns_at_its_timeout_when_nothing_comes(dump_app: Celeriac, monkeypatch: pytest.MonkeyPatch,
                                                        restore_signals: None) -> None:
    started = time.monotonic()
    printed, lines, _ = run_dump(dump_app, monkeypatch, [], timeout=0.4)
    assert printed == 0 and lines == []
    assert 0.38 <= time.monotonic() - started < 2.0
