"""Beat's decisions (celeriac/beat.py) on the memory broker, driven by an explicit clock.

Every `tick(now)` gets a fake instant; what beat sent is fetched back from the broker and
decoded. Only the lease uses the real clock (for its expiry), and it is long enough (10 s
or more) never to run out during a test unless the test releases it.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Iterator
from zoneinfo import ZoneInfo

import pytest

from celeriac import Celeriac, protocol
from celeriac.beat import _MAX_TICKS_PER_ENTRY, MISSED_POLICIES, Beat, Entry, load_entries, tick_task_id
from celeriac.transports.memory.broker import _MemoryScheduleStore
from celeriac.canvas import Signature, chain
from celeriac.exceptions import ImproperlyConfigured
from celeriac.schedules import crontab, schedule

T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()  # the fake clock's origin: 1767225600.0
NY = ZoneInfo("America/New_York")
ACCEPT = protocol.accepted_types(["json"])


def new_app(url: str | None = None, **settings: Any) -> Celeriac:
    url = url or f"memory://beatunit-{uuid.uuid4().hex}"
    app = Celeriac("beatunit", broker=url, backend=url, set_as_current=False, **settings)

    @app.task(name="beatunit.add")
    def add(x: int, y: int) -> int:
        return x + y

    return app


@pytest.fixture
def app() -> Iterator[Celeriac]:
    a = new_app()
    yield a
    a._reset_connections()


def add_task(app: Celeriac) -> Any:
    return app.tasks["beatunit.add"]


def sent(app: Celeriac, queues: tuple[str, ...] = ("celery",)) -> list[dict[str, Any]]:
    """What beat published since the last call, decoded, in tick order."""
    got = app.broker.fetch(list(queues), "test-worker", "test-worker-0", 100_000, timeout=0)
    if got:
        app.broker.ack(got)
    out = []
    for d in got:
        m = protocol.unpack(d.payload)
        args, kwargs, _embed = protocol.decode_body(m, ACCEPT)
        out.append({"entry": m.headers.get("periodic_task_name"), "tick": m.headers.get("periodic_tick"),
                    "task": m.task_name, "id": m.task_id, "args": args, "kwargs": kwargs, "queue": d.queue,
                    "priority": d.priority, "headers": m.headers, "properties": m.properties})
    return sorted(out, key=lambda r: (r["tick"], r["entry"]))


def ticks_of(rows: list[dict[str, Any]], entry: str | None = None) -> list[float]:
    return [r["tick"] for r in rows if entry is None or r["entry"] == entry]


# --- entries ---

def test_entries_from_beat_schedule(app: Celeriac) -> None:
    app.conf.beat_schedule = {
        "every-10": {"task": "beatunit.add", "schedule": 10.0, "args": (1, 2)},
        "hourly": {"task": "other.task", "schedule": crontab(minute=0), "kwargs": {"k": "v"},
                   "options": {"queue": "hi", "priority": 5}, "missed": "skip"},
        "five-minutes": {"task": add_task(app), "schedule": timedelta(minutes=5), "args": [3, 4],
                         "relative": True},
        "interval-object": {"task": "x.y", "schedule": schedule(30)},
    }
    entries = load_entries(app)
    assert list(entries) == ["every-10", "hourly", "five-minutes", "interval-object"]
    assert entries["every-10"] == Entry("every-10", "beatunit.add", schedule(10), (1, 2), {}, {}, "run_once")
    assert entries["hourly"] == Entry("hourly", "other.task", crontab(minute=0), (), {"k": "v"},
                                      {"queue": "hi", "priority": 5}, "skip")
    assert entries["five-minutes"] == Entry("five-minutes", "beatunit.add", schedule(300), (3, 4), {}, {},
                                            "run_once")
    assert entries["interval-object"].schedule == schedule(30)
    assert MISSED_POLICIES == ("run_once", "skip")


def test_beat_missed_policy_is_the_default_missed(app: Celeriac) -> None:
    app.conf.beat_missed_policy = "skip"
    app.conf.beat_schedule = {"a": {"task": "t", "schedule": 1}, "b": {"task": "t", "schedule": 1,
                                                                        "missed": "run_once"}}
    entries = load_entries(app)
    assert entries["a"].missed == "skip" and entries["b"].missed == "run_once"


def test_add_periodic_task(app: Celeriac) -> None:
    add = add_task(app)
    key = app.add_periodic_task(10.0, add.s(2, 3), name="add-every-10", queue="periodic", priority=3)
    assert key == "add-every-10"
    default_key = app.add_periodic_task(crontab(minute=0), add.s(1).set(queue="q2", task_id="dropped"),
                                        args=(5,), kwargs={"z": 1}, missed="skip")
    assert default_key == repr(add.s(1).set(queue="q2", task_id="dropped"))
    entries = load_entries(app)
    assert entries["add-every-10"] == Entry("add-every-10", "beatunit.add", schedule(10), (2, 3), {},
                                            {"queue": "periodic", "priority": 3}, "run_once")
    assert entries[default_key] == Entry(default_key, "beatunit.add", crontab(minute=0), (1, 5), {"z": 1},
                                         {"queue": "q2"}, "skip")


def test_add_periodic_task_replaces_an_entry_of_the_same_name(app: Celeriac) -> None:
    add = add_task(app)
    app.conf.beat_schedule = {"same": {"task": "old.task", "schedule": 5}}
    app.add_periodic_task(60, add.s(1, 1), name="same")
    app.add_periodic_task(30, add.s(2, 2), name="same")
    entries = load_entries(app)
    assert list(entries) == ["same"]
    assert entries["same"] == Entry("same", "beatunit.add", schedule(30), (2, 2), {}, {}, "run_once")


def test_add_periodic_task_needs_a_plain_signature(app: Celeriac) -> None:
    add = add_task(app)
    for bad in (add, "beatunit.add", chain(add.s(1, 2), add.s(3))):
        with pytest.raises(TypeError, match="add_periodic_task needs a task signature"):
            app.add_periodic_task(10, bad)
    assert load_entries(app) == {}
    assert isinstance(add.s(1, 2), Signature)


def test_on_after_configure_handlers_add_entries() -> None:
    app = new_app()
    add = add_task(app)
    calls: list[Any] = []

    @app.on_after_configure.connect
    def setup_periodic_tasks(sender: Celeriac, **kwargs: Any) -> None:
        calls.append(sender)
        sender.add_periodic_task(10.0, add.s("hello", "world"), name="say hello every 10")
        sender.add_periodic_task(crontab(hour=7, minute=30, day_of_week=1), add.s(0, 1), name="monday",
                                 expires=60)

    app.conf.beat_schedule = {"plain": {"task": "beatunit.add", "schedule": 5, "args": (1, 1)}}
    beat = Beat(app, holder="h")
    assert calls == [app]
    assert list(beat.entries) == ["plain", "say hello every 10", "monday"]
    assert beat.entries["say hello every 10"].args == ("hello", "world")
    assert beat.entries["monday"].schedule == crontab(hour=7, minute=30, day_of_week="mon")
    assert beat.entries["monday"].options == {"expires": 60}
    Beat(app, holder="h2")  # a second beat on the same app: the handler ran once, entries stay
    assert calls == [app]
    assert list(load_entries(app)) == ["plain", "say hello every 10", "monday"]


@pytest.mark.parametrize("name, spec, fragment", [
    ("no-task", {"schedule": 10}, "needs 'task'"),
    ("empty-task", {"task": "", "schedule": 10}, "needs 'task'"),
    ("no-schedule", {"task": "t"}, "needs 'task'"),
    ("bad-schedule", {"task": "t", "schedule": "every day"}, "expected seconds, a timedelta"),
    ("zero-schedule", {"task": "t", "schedule": 0}, "must be more than 0 seconds"),
    ("negative-schedule", {"task": "t", "schedule": timedelta(seconds=-5)}, "must be more than 0 seconds"),
    ("none-schedule", {"task": "t", "schedule": None}, "expected seconds"),
    ("typo", {"task": "t", "schedule": 10, "shedule": 5}, "unknown key(s) ['shedule']"),
    ("two-typos", {"task": "t", "schedule": 10, "arg": (), "kwarg": {}}, "unknown key(s) ['arg', 'kwarg']"),
    ("bad-missed", {"task": "t", "schedule": 10, "missed": "always"}, "missed='always'"),
    ("not-a-dict", ["t", 10], "must be a dict"),
])
def test_bad_entries_name_themselves(app: Celeriac, name: str, spec: Any, fragment: str) -> None:
    app.conf.beat_schedule = {"fine": {"task": "t", "schedule": 1}, name: spec}
    with pytest.raises(ImproperlyConfigured) as info:
        load_entries(app)
    assert f"beat_schedule[{name!r}]" in str(info.value)
    assert fragment in str(info.value)
    with pytest.raises(ImproperlyConfigured, match=name):
        Beat(app, holder="h")


def test_a_bad_missed_policy_from_add_periodic_task_names_the_entry(app: Celeriac) -> None:
    app.add_periodic_task(10, add_task(app).s(1, 2), name="mine", missed="sometimes")
    with pytest.raises(ImproperlyConfigured, match=r"beat_schedule\['mine'\]: missed='sometimes'"):
        load_entries(app)


def test_a_bad_beat_missed_policy(app: Celeriac) -> None:
    app.conf.beat_missed_policy = "never"
    app.conf.beat_schedule = {"a": {"task": "t", "schedule": 1}}
    with pytest.raises(ImproperlyConfigured, match="beat_missed_policy='never'"):
        load_entries(app)


def test_the_store_is_the_memory_brokers(app: Celeriac) -> None:
    beat = Beat(app, holder="h")
    assert isinstance(beat.store, _MemoryScheduleStore)
    assert beat.name == "beatunit"
    assert beat.missed_after == 2 * beat.lease_timeout == 20.0


# --- ticks ---

def test_first_sight_records_an_anchor_without_sending(app: Celeriac) -> None:
    app.conf.beat_schedule = {"e": {"task": "beatunit.add", "schedule": 10, "args": (1, 2)},
                              "c": {"task": "beatunit.add", "schedule": crontab(minute=0), "args": (1, 2)}}
    beat = Beat(app, holder="h")
    assert beat.store.last_ticks() == {}
    beat.tick(now=T0 + 0.5)
    assert sent(app) == []
    assert beat.store.last_ticks() == {"e": T0 + 0.5, "c": T0 + 0.5}
    assert beat.sent == 0
    beat.tick(now=T0 + 5)
    assert sent(app) == [] and beat.store.last_ticks() == {"e": T0 + 0.5, "c": T0 + 0.5}


def test_interval_ticks_are_sent_once_each(app: Celeriac) -> None:
    app.conf.beat_schedule = {"e": {"task": "beatunit.add", "schedule": 10, "args": (1, 2)}}
    beat = Beat(app, holder="h")
    beat.tick(now=T0)
    timeline = [T0 + 5, T0 + 9.999, T0 + 10, T0 + 10, T0 + 10.5, T0 + 15, T0 + 19.99, T0 + 20, T0 + 20,
                T0 + 29, T0 + 31, T0 + 31, T0 + 39.5]
    per_call = []
    for now in timeline:
        beat.tick(now=now)
        per_call.append(ticks_of(sent(app)))
    assert per_call == [[], [], [T0 + 10], [], [], [], [], [T0 + 20], [], [], [T0 + 30], [], []]
    assert beat.store.last_ticks() == {"e": T0 + 30}
    assert beat.sent == 3


def test_interval_ticks_keep_the_anchors_phase(app: Celeriac) -> None:
    app.conf.beat_missed_after = 1000
    app.conf.beat_schedule = {"e": {"task": "t", "schedule": 60}}
    beat = Beat(app, holder="h")
    beat.tick(now=T0 + 7.25)
    beat.tick(now=T0 + 100)
    beat.tick(now=T0 + 130)
    beat.tick(now=T0 + 187.25)
    assert ticks_of(sent(app)) == [T0 + 67.25, T0 + 127.25, T0 + 187.25]


def test_a_missed_interval_stand_in_keeps_the_phase(app: Celeriac) -> None:
    app.conf.beat_schedule = {"e": {"task": "t", "schedule": 60}}
    beat = Beat(app, holder="h")
    beat.tick(now=T0 + 7.25)
    beat.tick(now=T0 + 300)  # 67.25 .. 247.25 missed (older than 20 s): the newest stands for all
    beat.tick(now=T0 + 310)
    assert ticks_of(sent(app)) == [T0 + 247.25, T0 + 307.25]


def test_late_ticks_are_each_sent(app: Celeriac) -> None:
    app.conf.beat_missed_after = 100
    app.conf.beat_schedule = {"e": {"task": "beatunit.add", "schedule": 10, "args": (1, 2)}}
    beat = Beat(app, holder="h")
    beat.tick(now=T0)
    beat.tick(now=T0 + 35)
    rows = sent(app)
    assert ticks_of(rows) == [T0 + 10, T0 + 20, T0 + 30]
    assert [r["id"] for r in rows] == [tick_task_id("beatunit", "e", T0 + k) for k in (10, 20, 30)]
    assert len({r["id"] for r in rows}) == 3
    beat.tick(now=T0 + 35)
    assert sent(app) == []


def test_late_crontab_ticks_are_each_sent(app: Celeriac) -> None:
    app.conf.beat_missed_after = 600
    app.conf.beat_schedule = {"c": {"task": "t", "schedule": crontab(minute="*/2")}}
    beat = Beat(app, holder="h")
    beat.tick(now=T0 - 30)
    beat.tick(now=T0 + 5 * 60 + 1)
    assert ticks_of(sent(app)) == [T0, T0 + 120, T0 + 240]


@pytest.mark.parametrize("policy, expected", [
    # last T0, every 10 s, now T0+105, missed_after 20 -> ticks before T0+85 are missed:
    # run_once sends one stand-in (the newest missed tick, T0+80) and the late ones after it
    ("run_once", [80, 90, 100]),
    ("skip", [90, 100]),
])
def test_missed_interval_ticks(app: Celeriac, policy: str, expected: list[int]) -> None:
    app.conf.beat_schedule = {"e": {"task": "beatunit.add", "schedule": 10, "args": (1, 2), "missed": policy}}
    beat = Beat(app, holder="h")
    assert beat.missed_after == 20
    beat.tick(now=T0)
    beat.tick(now=T0 + 105)
    rows = sent(app)
    assert ticks_of(rows) == [T0 + k for k in expected]
    assert [r["id"] for r in rows] == [tick_task_id("beatunit", "e", T0 + k) for k in expected]
    assert beat.store.last_ticks() == {"e": T0 + 100}
    beat.tick(now=T0 + 105)
    beat.tick(now=T0 + 109)
    assert sent(app) == []
    beat.tick(now=T0 + 110)
    assert ticks_of(sent(app)) == [T0 + 110]


@pytest.mark.parametrize("policy, expected", [
    # every minute, last T0, now T0+3600: one stand-in at now - missed_after (T0+3580), then
    # the on-time tick at T0+3600; 'skip' only records the stand-in
    ("run_once", [3580, 3600]),
    ("skip", [3600]),
])
def test_missed_crontab_ticks(app: Celeriac, policy: str, expected: list[int]) -> None:
    app.conf.beat_schedule = {"c": {"task": "t", "schedule": crontab(), "missed": policy}}
    beat = Beat(app, holder="h")
    beat.tick(now=T0)
    beat.tick(now=T0 + 3600)
    assert ticks_of(sent(app)) == [T0 + k for k in expected]
    assert beat.store.last_ticks() == {"c": T0 + 3600}
    beat.tick(now=T0 + 3660)
    assert ticks_of(sent(app)) == [T0 + 3660]


def test_a_long_outage_of_a_daily_job_runs_it_once(app: Celeriac) -> None:
    app.conf.beat_schedule = {"daily": {"task": "t", "schedule": crontab(minute=30, hour=7)}}
    beat = Beat(app, holder="h")
    beat.tick(now=T0)  # 2026-01-01 00:00
    beat.tick(now=T0 + 10 * 86400 + 3 * 3600)  # ten days later, 03:00: ten 07:30s were missed
    assert ticks_of(sent(app)) == [T0 + 10 * 86400 + 3 * 3600 - 20]
    beat.tick(now=T0 + 10 * 86400 + 7.5 * 3600)
    assert ticks_of(sent(app)) == [T0 + 10 * 86400 + 7.5 * 3600]


def test_per_entry_missed_overrides_beat_missed_policy(app: Celeriac) -> None:
    app.conf.beat_missed_policy = "skip"
    app.conf.beat_schedule = {
        "default": {"task": "t", "schedule": 10},
        "own-run-once": {"task": "t", "schedule": 10, "missed": "run_once"},
    }
    app.add_periodic_task(10, add_task(app).s(1, 1), name="added-run-once", missed="run_once")
    beat = Beat(app, holder="h")
    beat.tick(now=T0)
    beat.tick(now=T0 + 105)
    rows = sent(app)
    assert ticks_of(rows, "default") == [T0 + 90, T0 + 100]
    assert ticks_of(rows, "own-run-once") == [T0 + 80, T0 + 90, T0 + 100]
    assert ticks_of(rows, "added-run-once") == [T0 + 80, T0 + 90, T0 + 100]


def test_a_backlog_of_late_ticks_goes_out_in_bounded_batches(app: Celeriac) -> None:
    app.conf.beat_missed_after = 10**9
    app.conf.beat_schedule = {"e": {"task": "t", "schedule": 1}}
    beat = Beat(app, holder="h")
    beat.tick(now=T0)
    counts = []
    for _ in range(4):
        beat.tick(now=T0 + 2500)
        counts.append(len(sent(app)))
    assert _MAX_TICKS_PER_ENTRY == 1000
    assert counts == [1000, 1000, 500, 0]
    assert beat.store.last_ticks() == {"e": T0 + 2500}


# --- the message ---

def test_the_message(app: Celeriac) -> None:
    app.conf.beat_schedule = {"e": {
        "task": "beatunit.add", "schedule": 10, "args": (2, 3), "kwargs": {"z": [1, "two"]},
        "options": {"queue": "periodic", "priority": 7, "expires": 30,
                    "headers": {"x-custom": "v", "periodic_task_name": "spoofed"}}}}
    beat = Beat(app, holder="h")
    beat.tick(now=T0)
    beat.tick(now=T0 + 10.5)
    assert sent(app) == []  # not on the default queue
    [row] = sent(app, ("periodic",))
    assert row["task"] == "beatunit.add"
    assert row["args"] == (2, 3) and row["kwargs"] == {"z": [1, "two"]}
    assert row["queue"] == "periodic" and row["priority"] == 7
    assert row["properties"]["priority"] == 7
    assert row["headers"]["periodic_task_name"] == "e"
    assert row["headers"]["periodic_tick"] == T0 + 10 and isinstance(row["headers"]["periodic_tick"], float)
    assert row["headers"]["x-custom"] == "v"
    assert row["headers"]["expires"] is not None
    assert row["id"] == tick_task_id("beatunit", "e", T0 + 10) == row["headers"]["root_id"]


def test_the_message_of_an_added_task(app: Celeriac) -> None:
    app.add_periodic_task(5, add_task(app).s(4, y=5), name="added", queue="q1", priority=2)
    beat = Beat(app, holder="h")
    beat.tick(now=T0)
    beat.tick(now=T0 + 5)
    [row] = sent(app, ("q1",))
    assert (row["task"], row["args"], row["kwargs"], row["priority"]) == ("beatunit.add", (4,), {"y": 5}, 2)
    assert row["entry"] == "added" and row["tick"] == T0 + 5
    assert row["id"] == tick_task_id("beatunit", "added", T0 + 5)


def test_tick_task_id_is_deterministic() -> None:
    a = tick_task_id("beat", "entry", 1767225600.5)
    assert a == tick_task_id("beat", "entry", 1767225600.5)
    assert str(uuid.UUID(a)) == a and uuid.UUID(a).version == 5
    others = {tick_task_id("beat2", "entry", 1767225600.5), tick_task_id("beat", "entry2", 1767225600.5),
              tick_task_id("beat", "entry", 1767225600.0), tick_task_id("beat", "entry", 1767225600.5000002),
              tick_task_id("bea", "tentry", 1767225600.5)}
    assert a not in others and len(others) == 5


def test_beat_name_scopes_the_state_and_the_ids() -> None:
    url = f"memory://beatunit-{uuid.uuid4().hex}"
    first = new_app(url, beat_name="first", beat_schedule={"e": {"task": "t", "schedule": 10}})
    second = new_app(url, beat_name="second", beat_schedule={"e": {"task": "t", "schedule": 10}})
    b1, b2 = Beat(first, holder="one"), Beat(second, holder="two")
    b1.tick(now=T0)
    b2.tick(now=T0 + 3)  # its own lease: it leads too
    b1.tick(now=T0 + 10)
    b2.tick(now=T0 + 13)
    rows = sent(first)
    assert [(r["tick"], r["id"]) for r in rows] == [(T0 + 10, tick_task_id("first", "e", T0 + 10)),
                                                    (T0 + 13, tick_task_id("second", "e", T0 + 13))]
    assert b1.store.last_ticks() == {"e": T0 + 10} and b2.store.last_ticks() == {"e": T0 + 13}


# --- several beats ---

def test_two_beats_only_one_leads_and_no_tick_goes_twice() -> None:
    url = f"memory://beatunit-{uuid.uuid4().hex}"
    spec = {"e": {"task": "t", "schedule": 1}}
    app1, app2 = new_app(url, beat_schedule=spec), new_app(url, beat_schedule=spec)
    b1 = Beat(app1, holder="b1", lease_timeout=30)
    b2 = Beat(app2, holder="b2", lease_timeout=30)
    b1.tick(now=T0)
    b2.tick(now=T0)
    assert b1.token is not None and b2.token is None
    assert b1.store.lease_state().holder == "b1"
    b1.tick(now=T0 + 3)
    b2.tick(now=T0 + 3)
    assert ticks_of(sent(app1)) == [T0 + 1, T0 + 2, T0 + 3]
    b1.store.release("b1")  # b1 stops (its object still believes it leads)
    b2.tick(now=T0 + 5)  # takes over from the recorded ticks: neither repeats nor skips
    assert b2.token is not None and b2.token > 0
    assert ticks_of(sent(app2)) == [T0 + 4, T0 + 5]
    b1.tick(now=T0 + 6)  # its old token is fenced off: nothing goes out, it stands by
    assert b1.token is None
    assert sent(app1) == []
    b2.tick(now=T0 + 6)
    b1.tick(now=T0 + 7)
    b2.tick(now=T0 + 7)
    assert ticks_of(sent(app1)) == [T0 + 6, T0 + 7]
    assert b1.sent == 3 and b2.sent == 4
    assert b1.store.last_ticks() == {"e": T0 + 7}
    assert b1.store.lease_state().holder == "b2"


def test_a_leader_whose_lease_lapsed_says_so_when_it_leads_again(app: Celeriac,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    app.conf.beat_schedule = {"e": {"task": "t", "schedule": 1}}
    beat = Beat(app, holder="stalled", lease_timeout=30)
    beat.tick(now=T0)
    first = beat.token
    assert first is not None
    store = beat.store
    holder, token, _expires = store._s.beat_leases[store.name]
    store._s.beat_leases[store.name] = (holder, token, time.time() - 1)  # it stalled past its lease
    with caplog.at_level("WARNING", logger="celeriac.beat"):
        beat.tick(now=T0 + 20)  # past its renewal time: it asks for the lease again and gets a new token
    assert beat.token is not None and beat.token > first  # ticks fenced with the old token are refused
    lapsed = [r.getMessage() for r in caplog.records if "lost the lead" in r.getMessage()]
    assert len(lapsed) == 1 and "stalled" in lapsed[0] and "lease ran out" in lapsed[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="celeriac.beat"):
        beat.tick(now=T0 + 21)  # a plain renewal keeps the token and says nothing
    assert beat.token is not None and not any("lost the lead" in r.getMessage() for r in caplog.records)


def test_many_beats_interleaved_send_each_tick_once() -> None:
    url = f"memory://beatunit-{uuid.uuid4().hex}"
    spec = {"fast": {"task": "t", "schedule": 2}, "slow": {"task": "t", "schedule": 7}}
    apps = [new_app(url, beat_schedule=spec) for _ in range(3)]
    beats = [Beat(a, holder=f"b{i}", lease_timeout=30) for i, a in enumerate(apps)]
    for step in range(0, 61):
        for b in beats[step % 3:] + beats[: step % 3]:
            b.tick(now=T0 + step)
        if step in (20, 40):  # hand the lead over twice
            leader = next(b for b in beats if b.token is not None)
            leader.store.release(leader.holder)
    rows = sent(apps[0])
    assert ticks_of(rows, "fast") == [T0 + k for k in range(2, 61, 2)]
    assert ticks_of(rows, "slow") == [T0 + k for k in range(7, 61, 7)]
    assert len({r["id"] for r in rows}) == len(rows)
    assert sum(b.sent for b in beats) == len(rows)


def test_a_new_beat_continues_from_the_recorded_ticks(app: Celeriac) -> None:
    app.conf.beat_schedule = {"e": {"task": "t", "schedule": 10}}
    first = Beat(app, holder="one")
    first.tick(now=T0)
    first.tick(now=T0 + 10)
    first.store.release("one")
    app.conf.beat_schedule = {"e": {"task": "t", "schedule": 10}, "new": {"task": "t", "schedule": 10}}
    second = Beat(app, holder="two")
    second.tick(now=T0 + 20)
    assert ticks_of(sent(app)) == [T0 + 10, T0 + 20]
    assert second.store.last_ticks() == {"e": T0 + 20, "new": T0 + 20}  # "new" anchored on first sight
    second.tick(now=T0 + 30)
    assert [(r["entry"], r["tick"]) for r in sent(app)] == [("e", T0 + 30), ("new", T0 + 30)]


def test_a_standby_does_not_anchor_or_send(app: Celeriac) -> None:
    app.conf.beat_schedule = {"e": {"task": "t", "schedule": 10}}
    leader, standby = Beat(app, holder="leader"), Beat(app, holder="standby")
    leader.store.lease("leader", 60)  # the leader holds the lease, but has not ticked yet
    for k in range(5):
        standby.tick(now=T0 + 10 * k)
    assert standby.token is None and standby.store.last_ticks() == {} and sent(app) == []


# --- daylight saving time, through beat ---

def _run_day(app: Celeriac, start: datetime, end: datetime) -> list[dict[str, Any]]:
    beat = Beat(app, holder="h")
    now = start.timestamp()
    while now < end.timestamp():
        beat.tick(now=now)
        now += 60
    return sent(app)


def test_beat_follows_spring_forward_in_its_time_zone() -> None:
    app = new_app(timezone="America/New_York", beat_missed_after=3600, beat_schedule={
        "half-hourly": {"task": "t", "schedule": crontab(minute="*/30")},
        "daily-0230": {"task": "t", "schedule": crontab(minute=30, hour=2)},
    })
    rows = _run_day(app, datetime(2026, 3, 7, 23, 59, tzinfo=NY), datetime(2026, 3, 9, tzinfo=NY))
    expected = [datetime(2026, 3, 8, h, m, tzinfo=NY).timestamp() for h in [0, 1, *range(3, 24)] for m in (0, 30)]
    assert len(expected) == 46
    assert ticks_of(rows, "half-hourly") == expected
    [daily] = ticks_of(rows, "daily-0230")
    assert datetime.fromtimestamp(daily, NY).isoformat() == "2026-03-08T03:30:00-04:00"


def test_beat_follows_fall_back_in_its_time_zone() -> None:
    app = new_app(timezone="America/New_York", beat_missed_after=3600, beat_schedule={
        "half-hourly": {"task": "t", "schedule": crontab(minute="*/30")},
        "daily-0130": {"task": "t", "schedule": crontab(minute=30, hour=1)},
    })
    start = datetime(2026, 10, 31, 23, 59, tzinfo=NY)
    rows = _run_day(app, start, datetime(2026, 11, 2, tzinfo=NY))  # a 25-hour day
    half_hourly = ticks_of(rows, "half-hourly")
    first = datetime(2026, 11, 1, tzinfo=NY).timestamp()
    assert half_hourly == [first + 1800.0 * k for k in range(50)]
    assert [datetime.fromtimestamp(t, NY).strftime("%H:%M%z") for t in half_hourly[2:7]] == [
        "01:00-0400", "01:30-0400", "01:00-0500", "01:30-0500", "02:00-0500"]
    [daily] = ticks_of(rows, "daily-0130")
    assert datetime.fromtimestamp(daily, NY).isoformat() == "2026-11-01T01:30:00-04:00"


# --- beat --list ---

def test_listing_rows() -> None:
    app = new_app(timezone="Europe/Berlin", beat_schedule={
        "minutely": {"task": "beatunit.add", "schedule": 60, "args": (1, 2), "options": {"queue": "q"}},
        "daily": {"task": "other", "schedule": crontab(minute=30, hour=7), "missed": "skip"},
    })
    beat = Beat(app, holder="h")
    before = beat.listing()
    assert [r["name"] for r in before] == ["minutely", "daily"]
    assert before[0]["last"] is None and 59 <= before[0]["due_in"] <= 60
    future = datetime(2099, 1, 1, tzinfo=UTC).timestamp()  # so that "next" is still ahead of the real clock
    beat.tick(now=future)
    rows = beat.listing()
    now = time.time()
    minutely, daily = rows
    assert {k: v for k, v in minutely.items() if k != "due_in"} == {
        "name": "minutely", "task": "beatunit.add", "schedule": "every 1 minute",
        "last": "2099-01-01 01:00:00+01:00", "next": "2099-01-01 01:01:00+01:00",
        "missed": "run_once", "options": {"queue": "q"}}
    assert minutely["due_in"] == pytest.approx(future + 60 - now, abs=5)
    assert {k: v for k, v in daily.items() if k != "due_in"} == {
        "name": "daily", "task": "other", "schedule": crontab(minute=30, hour=7).human(),
        "last": "2099-01-01 01:00:00+01:00", "next": "2099-01-01 07:30:00+01:00",
        "missed": "skip", "options": {}}
    assert daily["due_in"] == pytest.approx(future + 6.5 * 3600 - now, abs=5)


def test_listing_of_an_overdue_entry_says_now() -> None:
    app = new_app(beat_schedule={"e": {"task": "t", "schedule": 10}})
    beat = Beat(app, holder="h")
    beat.tick(now=T0)  # anchored in the past: due long ago
    [row] = beat.listing()
    assert row["last"] == "2026-01-01 00:00:00+00:00"
    assert row["due_in"] == 0.0
    assert abs(datetime.fromisoformat(row["next"]).timestamp() - time.time()) < 5


# --- options beat must own ---

def test_an_entry_with_its_own_task_id_does_not_stop_the_others(app: Celeriac) -> None:
    app.conf.beat_schedule = {"own-id": {"task": "t", "schedule": 10, "options": {"task_id": "fixed"}},
                              "other": {"task": "t", "schedule": 10}}
    try:
        beat = Beat(app, holder="h")
    except ImproperlyConfigured as exc:  # rejecting it up front, naming it, would be fine
        assert "own-id" in str(exc)
        return
    beat.tick(now=T0)
    beat.tick(now=T0 + 10)
    assert ticks_of(sent(app), "other") == [T0 + 10]
