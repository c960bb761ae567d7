"""The EventChannel contract (celeriac/brokers/base.py) on every stream events travel on, the
EventDispatcher (celeriac/events.py) over real and fake channels, and task-sent events from an app.

Streams under test:

- the memory broker (`memory://<unique name>`), the SQLite broker (a file in tmp_path) and the
  Redis broker (the session's private redis-server, flushed);
- the result stores that carry events where the broker has none (RabbitMQ): SQLite and Redis.

Nothing sleeps and hopes: a test waits with next_batch's own timeout or with wait_until.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pytest

from celeriac import Celeriac
from celeriac import events as events_mod
from celeriac.backends import create_result_store
from celeriac.brokers import create_broker
from celeriac.brokers.base import EventChannel, EventSubscription
from celeriac.transports.memory.broker import _MemoryEventChannel
from celeriac.events import EventDispatcher, Receiver, channel_for, worker_fields
from celeriac.exceptions import ImproperlyConfigured, OperationalError
from helpers import fresh_postgres_url, fresh_redis_url, wait_until

KINDS = ["memory-broker", "sqlite-broker", "redis-broker", "amqp-broker", "postgres-broker", "sqlite-results",
         "redis-results", "postgres-results"]
# Where all readers share one bounded stream; RabbitMQ gives each reader its own bounded queue
# instead (test_rabbitmq_reader_queue_is_bounded_and_counts_what_it_lost).
SHARED_STREAMS = [k for k in KINDS if not k.startswith("amqp")]
SMALL = 100  # events_max_len of the retention tests (the smallest a channel accepts)


# --- one stream under test ---

@dataclass
class Stream:
    kind: str
    url: str
    channel: EventChannel
    opener: Callable[[], EventChannel]
    stored: Callable[[], int]  # how many events the stream keeps right now (rows, XLEN, list length)
    closers: list[Any] = field(default_factory=list)

    def another(self) -> EventChannel:
        """A second channel on the same stream: as another process would open it."""
        return self.opener()



def make_stream(kind: str, tmp_path: Path, request: pytest.FixtureRequest, max_len: int | None = None) -> Stream:
    options: dict[str, Any] = {"events_max_len": max_len} if max_len else {}
    closers: list[Any] = []
    if kind == "memory-broker":
        url = f"memory://events-{uuid.uuid4().hex}"
        if max_len:  # the memory stream has a fixed cap (MAX_LEN), not the events_max_len option
            request.getfixturevalue("monkeypatch").setattr(_MemoryEventChannel, "MAX_LEN", max_len)
    elif kind.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'events.db'}"
    elif kind.startswith("postgres"):
        url = fresh_postgres_url(request)
    elif kind.startswith("amqp"):
        server = request.getfixturevalue("rabbit_server")
        if not server.ping():
            server.start()
        url = str(server.url)
    else:
        url = fresh_redis_url(request)

    def opener() -> EventChannel:
        owner: Any = (create_broker(url, options) if kind.endswith("-broker")
                      else create_result_store(url, options=options))
        closers.append(owner)
        channel = owner.event_channel()
        assert isinstance(channel, EventChannel)
        return channel

    channel = opener()
    if kind == "memory-broker":
        state = closers[0]._s

        def stored() -> int:
            return len(state.events)
    elif kind.startswith("sqlite"):
        path = tmp_path / "events.db"

        def stored() -> int:
            conn = sqlite3.connect(path)
            try:
                return int(conn.execute("SELECT count(*) FROM celeriac_events").fetchone()[0])
            finally:
                conn.close()
    elif kind.startswith("postgres"):
        def stored() -> int:
            import psycopg
            with psycopg.connect(url) as conn:
                return int(conn.execute("SELECT count(*) FROM celeriac.events").fetchone()[0])  # type: ignore[index]
    elif kind.startswith("amqp"):
        def stored() -> int:  # no shared stream: each reader's own queue is bounded (see its test)
            return 0
    else:
        assert channel.key == "celeriac:{events}"  # type: ignore[attr-defined]

        def stored() -> int:  # events, not stream entries: an entry holds one batch
            from celeriac.brokers.base import unframe_events
            entries = channel.client.xrange(channel.key)  # type: ignore[attr-defined]
            return sum(len(unframe_events(fields[b"b"])) for _id, fields in entries)
    return Stream(kind, url, channel, opener, stored, closers)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_stream(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Stream]]:
    made: list[Stream] = []

    def open_(max_len: int | None = None) -> Stream:
        made.append(make_stream(kind, tmp_path, request, max_len))
        return made[-1]

    yield open_
    for stream in made:
        for thing in stream.closers:
            thing.close()


@pytest.fixture
def stream(open_stream: Callable[..., Stream]) -> Stream:
    return open_stream()


def bodies(n: int, tag: str = "e", start: int = 0) -> list[bytes]:
    return [json.dumps({"type": "test", "tag": tag, "n": i}).encode() for i in range(start, start + n)]


def drain(sub: EventSubscription, expect: int | None = None, timeout: float = 15.0, quiet: float = 0.3) -> list[bytes]:
    """What the subscription delivers: until `expect` events came (failing at the deadline), or,
    without `expect`, until a next_batch of `quiet` seconds brings nothing."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while expect is None or len(got) < expect:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out with {len(got)} of {expect} events"
        batch = sub.next_batch(quiet if expect is None else min(1.0, remaining))
        if not batch and expect is None:
            break
        got.extend(batch)
    return got


# --- the contract ---

def test_a_subscriber_sees_only_what_is_sent_after_it_subscribed(stream: Stream) -> None:
    stream.channel.send(bodies(3, "before"))
    sub = stream.channel.subscribe()
    assert sub.missed == 0
    exact = [b'{"type": "task-sent", "name": "caf\xc3\xa9 \xe2\x98\x83"}',  # UTF-8, as the dispatcher writes
             b"\x00\xffraw\r\n bytes\x00",                                 # and any bytes at all
             b'{"type": "x"}']
    stream.channel.send(exact[:1])
    stream.channel.send(exact[1:])
    after = bodies(50, "after")
    stream.channel.send(after)
    assert drain(sub, expect=len(exact) + len(after)) == exact + after
    assert sub.next_batch(0.05) == []  # nothing twice, nothing extra
    assert sub.missed == 0


def test_a_second_channel_on_the_same_stream_sees_what_the_first_sends(stream: Stream) -> None:
    sub = stream.another().subscribe()
    stream.channel.send(bodies(4))
    assert drain(sub, expect=4) == bodies(4)


def test_sending_nothing_is_harmless(stream: Stream) -> None:
    sub = stream.channel.subscribe()
    stream.channel.send([])
    stream.channel.send(bodies(1))
    assert drain(sub, expect=1) == bodies(1)


def test_next_batch_returns_nothing_after_its_timeout(stream: Stream) -> None:
    sub = stream.channel.subscribe()
    started = time.monotonic()
    assert sub.next_batch(0.4) == []
    elapsed = time.monotonic() - started
    assert 0.38 <= elapsed < 0.4 + 1.5, elapsed
    started = time.monotonic()
    assert sub.next_batch(0) == []  # a zero timeout only looks
    assert time.monotonic() - started < 0.5


def test_next_batch_with_a_zero_timeout_returns_what_is_there(stream: Stream) -> None:
    sub = stream.channel.subscribe()
    stream.channel.send(bodies(2))
    got = wait_until(lambda: sub.next_batch(0), 5, message="the events")
    assert got == bodies(2)


def test_next_batch_wakes_up_when_another_thread_sends(stream: Stream) -> None:
    sub = stream.channel.subscribe()
    sent_at: list[float] = []
    go = threading.Event()

    def sender() -> None:
        go.wait(0.25)  # give the reader time to block: it must be woken, not find it on entry
        sent_at.append(time.monotonic())
        stream.channel.send([b'{"type": "wake"}'])

    thread = threading.Thread(target=sender, daemon=True)
    started = time.monotonic()
    thread.start()
    got = sub.next_batch(5.0)
    returned = time.monotonic()
    thread.join(5)
    assert got == [b'{"type": "wake"}']
    assert sent_at and returned - sent_at[0] < 0.5, f"woke {returned - sent_at[0]:.3f}s after the send"
    assert returned - started < 2.0


def test_two_subscribers_each_see_everything(stream: Stream) -> None:
    first = stream.channel.subscribe()
    second = stream.another().subscribe()
    sent: list[bytes] = []
    for i in range(5):
        batch = bodies(7, "b", start=i * 7)
        stream.channel.send(batch)
        sent.extend(batch)
    assert drain(first, expect=len(sent)) == sent
    assert drain(second, expect=len(sent)) == sent
    assert first.next_batch(0.05) == [] and second.next_batch(0.05) == []


def test_a_late_subscriber_does_not_take_events_from_an_early_one(stream: Stream) -> None:
    early = stream.channel.subscribe()
    stream.channel.send(bodies(3, "one"))
    late = stream.channel.subscribe()
    stream.channel.send(bodies(2, "two"))
    assert drain(early, expect=5) == bodies(3, "one") + bodies(2, "two")
    assert drain(late, expect=2) == bodies(2, "two")


def test_a_batch_of_5000_events_in_one_send(stream: Stream) -> None:
    sub = stream.channel.subscribe()
    batch = bodies(5000, "big")
    started = time.monotonic()
    stream.channel.send(batch)
    assert time.monotonic() - started < 10
    got = drain(sub, expect=5000)
    assert got == batch
    assert sub.next_batch(0.05) == []
    assert sub.missed == 0


@pytest.mark.parametrize("kind", SHARED_STREAMS)
def test_retention_keeps_the_stream_bounded_and_a_slow_reader_gets_the_newest(
        open_stream: Callable[..., Stream], kind: str) -> None:
    s = open_stream(max_len=SMALL)
    # One event before subscribing: a SQLite reader that subscribed on an empty table does not
    # count what it missed (see test_a_reader_subscribed_on_an_empty_stream_counts_what_it_missed).
    s.channel.send([b"primer"])
    sub = s.channel.subscribe()
    sent: list[bytes] = []
    for i in range(200):  # 1,000 events in batches of 5; the reader reads none meanwhile
        batch = bodies(5, "r", start=i * 5)
        s.channel.send(batch)
        sent.extend(batch)
    kept = s.stored()
    if s.kind == "memory-broker":
        assert kept == SMALL
    elif s.kind.startswith("sqlite"):
        assert SMALL <= kept <= SMALL + SMALL // 10  # pruned every max_len // 10 events
    else:
        assert kept == SMALL  # batches of 5: trimmed to max_len // 5 entries
    got = drain(sub)
    assert SMALL <= len(got) <= kept
    assert got == sent[-len(got):]  # the newest, in order, nothing twice
    assert sub.missed == len(sent) - len(got)  # every store counts what retention trimmed unread
    s.channel.send([b"after"])
    assert drain(sub, expect=1) == [b"after"]  # a reader that fell behind reads on normally


@pytest.mark.parametrize("kind", SHARED_STREAMS)
def test_a_reader_subscribed_on_an_empty_stream_counts_what_it_missed(
        open_stream: Callable[..., Stream], kind: str, request: pytest.FixtureRequest) -> None:
    s = open_stream(max_len=SMALL)
    sub = s.channel.subscribe()
    sent = bodies(1000, "fresh")
    for i in range(0, 1000, 10):
        s.channel.send(sent[i:i + 10])
    got = drain(sub)
    assert SMALL <= len(got) < len(sent)
    assert got == sent[-len(got):]
    assert sub.missed == len(sent) - len(got)  # every store counts what retention trimmed unread


# --- per implementation ---

def test_rabbitmq_reader_queue_is_bounded_and_counts_what_it_lost(tmp_path: Path,
                                                                   request: pytest.FixtureRequest) -> None:
    """Each reader has its own queue on the events exchange, bounded to events_max_len events
    of about EVENT_BYTES each; a reader that does not keep up loses the oldest batches that
    waited in its queue, gets the newest in order (after the few batches already on their way
    to it, EVENT_PREFETCH at most, in order), and counts the loss - also across two senders."""
    from celeriac.transports.amqp.broker import EVENT_BYTES, EVENT_PREFETCH
    s = make_stream("amqp-broker", tmp_path, request, max_len=SMALL)
    try:
        other = s.another()
        early = s.channel.subscribe()  # subscribed before anyone sent
        s.channel.send([b"before-the-late-reader"])
        other.send([b"from-the-other-sender"])
        late = s.channel.subscribe()  # these two senders started before it: only later gaps count
        padding = "x" * 600
        sent: list[bytes] = []
        for i in range(60):  # 300 events of ~650 bytes: about 4x what the queue may hold
            batch = [json.dumps({"type": "test", "n": i * 5 + k, "pad": padding}).encode() for k in range(5)]
            s.channel.send(batch)  # one sender: its order is kept (two connections' are not ordered)
            sent.extend(batch)
        extras = {b"before-the-late-reader", b"from-the-other-sender"}
        drained = [drain(early), drain(late)]
        for sub, published, got in ((early, len(sent) + 2, drained[0]), (late, len(sent), drained[1])):
            assert 0 < len(got) * 650 <= SMALL * EVENT_BYTES + EVENT_PREFETCH * 5 * 650  # bounded in bytes
            newest = next(n for n in range(len(got), 0, -1) if got[-n:] == sent[-n:])
            on_the_way = [e for e in got[:len(got) - newest] if e not in extras]
            # Which batches were on their way depends on when the reader's link took them (the
            # first ones sent, or later ones on a starved machine): a run of consecutive events,
            # in order, before the newest.
            assert len(on_the_way) <= EVENT_PREFETCH * 5
            if on_the_way:
                first = sent.index(on_the_way[0])
                assert on_the_way == sent[first:first + len(on_the_way)]
                assert first + len(on_the_way) <= len(sent) - newest
            assert newest >= SMALL // 2  # mostly the newest
            assert sub.missed == published - len(got), (len(got), sub.missed)
        s.channel.send([b"after"])
        for sub in (early, late):
            assert drain(sub, expect=1) == [b"after"]  # reads on normally
            sub.close()
    finally:
        for thing in s.closers:
            thing.close()


def test_sqlite_keeps_exactly_the_newest_max_len(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    s = make_stream("sqlite-broker", tmp_path, request, max_len=SMALL)
    try:
        highest = 0
        for i in range(250):  # one event per send: every send trims the table back to max_len
            s.channel.send([b"%d" % i])
            highest = max(highest, s.stored())
        assert highest == SMALL
        assert s.stored() == SMALL
    finally:
        for thing in s.closers:
            thing.close()


def test_sqlite_stays_bounded_with_many_short_lived_senders(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    s = make_stream("sqlite-broker", tmp_path, request, max_len=SMALL)
    try:
        for i in range(300):  # 300 processes that each publish one task with task_send_sent_event
            s.another().send([b"%d" % i])
        assert s.stored() <= SMALL + SMALL // 10
    finally:
        for thing in s.closers:
            thing.close()


def test_sqlite_and_redis_keep_at_least_100_events(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    sqlite_ch = make_stream("sqlite-broker", tmp_path, request, max_len=5)
    redis_ch = make_stream("redis-broker", tmp_path, request, max_len=5)
    try:
        assert sqlite_ch.channel.max_len == 100  # type: ignore[attr-defined]
        assert redis_ch.channel.max_len == 100  # type: ignore[attr-defined]
    finally:
        for thing in sqlite_ch.closers + redis_ch.closers:
            thing.close()


def test_memory_stream_keeps_its_newest_max_len_events(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    s = make_stream("memory-broker", tmp_path, request)
    sub = s.channel.subscribe()
    limit = _MemoryEventChannel.MAX_LEN
    sent = bodies(limit + 2000, "m")
    s.channel.send(sent[:5000])
    s.channel.send(sent[5000:])
    assert s.stored() == limit
    got = drain(sub)
    assert got == sent[-limit:]
    assert sub.missed == 2000


def test_memory_streams_of_different_names_are_separate(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    one = make_stream("memory-broker", tmp_path, request)
    two = make_stream("memory-broker", tmp_path, request)
    sub = two.channel.subscribe()
    one.channel.send(bodies(3))
    assert sub.next_batch(0.05) == []


def test_redis_streams_of_different_key_prefixes_are_separate(request: pytest.FixtureRequest) -> None:
    url = fresh_redis_url(request)
    one = create_broker(url, {"global_keyprefix": "one"})
    two = create_broker(url, {"global_keyprefix": "two"})
    try:
        ch_one, ch_two = one.event_channel(), two.event_channel()
        assert ch_one is not None and ch_two is not None
        assert ch_one.key == "one:{events}" and ch_two.key == "two:{events}"  # type: ignore[attr-defined]
        sub_two = ch_two.subscribe()
        ch_one.send(bodies(2))
        assert sub_two.next_batch(0.1) == []
        ch_two.send([b"mine"])
        assert drain(sub_two, expect=1) == [b"mine"]
    finally:
        one.close()
        two.close()


# --- channel_for ---

def _memory_app(**settings: Any) -> Celeriac:
    name = f"events-{uuid.uuid4().hex}"
    return Celeriac("events", broker=f"memory://{name}", backend=f"memory://{name}", set_as_current=False,
                    **settings)


def test_channel_for_prefers_the_broker_then_the_result_store(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    app = Celeriac("events", broker=f"memory://{uuid.uuid4().hex}", backend=f"sqlite:///{tmp_path / 'r.db'}",
                   set_as_current=False)
    assert isinstance(channel_for(app), _MemoryEventChannel)
    monkeypatch.setattr(app.broker, "event_channel", lambda: None)  # a broker without a stream (RabbitMQ)
    assert type(channel_for(app)).__name__ == "SQLiteEventChannel"
    monkeypatch.setattr(app.backend, "event_channel", lambda: None)
    with pytest.raises(ImproperlyConfigured, match="events need a shared stream"):
        channel_for(app)


def test_memory_result_store_has_no_stream() -> None:
    store = create_result_store(f"memory://{uuid.uuid4().hex}")
    try:
        assert store.event_channel() is None
    finally:
        store.close()


# --- EventDispatcher over a real channel ---

APP_KINDS = ["memory", "sqlite", "redis", "postgres"]


@pytest.fixture(params=APP_KINDS)
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Celeriac]:
    if request.param == "memory":
        made = _memory_app()
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'app.db'}"
        made = Celeriac("events", broker=url, backend=url, set_as_current=False)
    else:
        url = fresh_postgres_url(request) if request.param == "postgres" else fresh_redis_url(request)
        made = Celeriac("events", broker=url, backend=url, set_as_current=False)
    yield made
    if made._sent_events is not None:
        made._sent_events.close()
    made._reset_connections()


@pytest.fixture
def dispatchers() -> Iterator[list[EventDispatcher]]:
    made: list[EventDispatcher] = []
    yield made
    for d in made:
        d.close()


def test_dispatched_events_arrive_as_json_with_the_standard_fields(app: Celeriac,
                                                                   dispatchers: list[EventDispatcher]) -> None:
    sub = channel_for(app).subscribe()
    d = EventDispatcher(app, "worker1@box", flush_interval=0.05)
    dispatchers.append(d)
    before = time.time()
    d.send("task-received", uuid="u1", name="proj.add", args="(1, 2)", kwargs="{}", retries=0)
    d.send("task-started", uuid="u1")
    d.send("task-succeeded", uuid="u1", result="3", runtime=0.25, odd={1, 2})  # not JSON: repr
    d.send("worker-heartbeat", active=1, processed=5, events_dropped=0, **worker_fields(2.0))
    got = [json.loads(b) for b in drain(sub, expect=4)]
    after = time.time()
    assert [e["type"] for e in got] == ["task-received", "task-started", "task-succeeded", "worker-heartbeat"]
    for e in got:
        assert e["hostname"] == "worker1@box"
        assert before <= e["timestamp"] <= after
        assert e["pid"] == os.getpid()
        assert e["utcoffset"] == events_mod._utcoffset() and isinstance(e["utcoffset"], int)
    clocks = [e["clock"] for e in got]
    assert clocks == sorted(clocks) and len(set(clocks)) == 4
    assert got[0]["uuid"] == "u1" and got[0]["name"] == "proj.add" and got[0]["args"] == "(1, 2)"
    assert got[0]["kwargs"] == "{}" and got[0]["retries"] == 0
    assert got[2]["result"] == "3" and got[2]["runtime"] == 0.25 and got[2]["odd"] == repr({1, 2})
    hb = got[3]
    assert hb["active"] == 1 and hb["processed"] == 5 and hb["freq"] == 2.0
    assert hb["sw_ident"] == "celeriac" and hb["sw_ver"] and hb["sw_sys"]
    wait_until(lambda: d.sent == 4, 5, message="the dispatcher to count what it sent")  # counted after the send
    assert d.dropped == 0


def test_the_dispatcher_flushes_by_itself_within_the_flush_interval(app: Celeriac,
                                                                    dispatchers: list[EventDispatcher]) -> None:
    sub = channel_for(app).subscribe()
    d = EventDispatcher(app, "w@h", flush_interval=0.1)
    dispatchers.append(d)
    for round_ in range(2):  # the first event starts the thread; later ones ride on it
        started = time.monotonic()
        d.send("worker-heartbeat", n=round_)
        got = sub.next_batch(5.0)
        assert [json.loads(b)["n"] for b in got] == [round_]
        assert time.monotonic() - started < 0.1 + 0.6


def test_close_sends_what_is_left(app: Celeriac) -> None:
    sub = channel_for(app).subscribe()
    d = EventDispatcher(app, "w@h", flush_interval=60)  # the thread would not flush within this test
    for i in range(3):
        d.send("task-started", uuid=f"u{i}")
    assert sub.next_batch(0.1) == []
    started = time.monotonic()
    d.close()
    assert time.monotonic() - started < 1.5  # the thread is woken, not waited out
    assert [json.loads(b)["uuid"] for b in drain(sub, expect=3)] == ["u0", "u1", "u2"]
    assert d.sent == 3
    assert d._thread is not None and not d._thread.is_alive()
    assert d not in events_mod._open_dispatchers


def test_flush_sends_now_and_the_exit_hook_flushes_open_dispatchers(app: Celeriac,
                                                                    dispatchers: list[EventDispatcher]) -> None:
    sub = channel_for(app).subscribe()
    d = EventDispatcher(app, "w@h", flush_interval=60)
    dispatchers.append(d)
    d.send("task-started", uuid="now")
    d.flush()
    assert [json.loads(b)["uuid"] for b in drain(sub, expect=1)] == ["now"]
    d.send("task-started", uuid="at-exit")
    assert d in events_mod._open_dispatchers
    events_mod._flush_at_exit()
    assert [json.loads(b)["uuid"] for b in drain(sub, expect=1)] == ["at-exit"]


def test_a_disabled_dispatcher_sends_nothing(app: Celeriac) -> None:
    sub = channel_for(app).subscribe()
    d = app.events.Dispatcher(hostname="off@h", enabled=False)
    d.send("task-started", uuid="x")
    d.flush()
    d.close()
    assert d._thread is None and d.sent == 0 and d.dropped == 0
    assert sub.next_batch(0.2) == []


def test_app_events_dispatcher_defaults(dispatchers: list[EventDispatcher]) -> None:
    import socket
    app = _memory_app(event_buffer_size=7, event_flush_interval=0.3)
    d = app.events.Dispatcher()
    dispatchers.append(d)
    assert d.hostname == f"celeriac@{socket.gethostname()}"
    assert d.enabled and d.buffer_size == 7 and d.flush_interval == 0.3
    assert app.events.State is events_mod.State
    assert isinstance(app.events.Receiver(app.connection()), Receiver)


@pytest.fixture
def new_york_time() -> Iterator[None]:
    """The process in UTC-5 (a POSIX TZ rule, no tz database needed), for one test."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "EST+5"
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()


def test_utcoffset_follows_celerys_sign(new_york_time: None, dispatchers: list[EventDispatcher]) -> None:
    assert time.timezone == 5 * 3600 and not time.daylight
    d = EventDispatcher(_memory_app(), "w@h")
    dispatchers.append(d)
    assert d.utcoffset == time.timezone // 3600 == 5  # celery.utils.time.utcoffset()


@pytest.mark.timeout(60)
def test_a_forked_child_sends_its_own_events(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fork.db'}"
    app = Celeriac("events", broker=url, backend=url, set_as_current=False)
    sub = channel_for(app).subscribe()
    d = EventDispatcher(app, "w@h", flush_interval=0.05)
    try:
        d.send("worker-online", who="parent")  # the parent's thread runs (and holds its lock now and then)
        assert [json.loads(b)["who"] for b in drain(sub, expect=1)] == ["parent"]
        d.send("worker-heartbeat", who="parent-buffered")  # may still be in the buffer at fork
        pid = os.fork()
        if pid == 0:  # the child: never back into pytest
            code = 1
            try:
                d.send("task-started", who="child")  # the child counts its own events from zero
                d.close()
                code = 0 if (d.sent, d.dropped) == (1, 0) else 2  # the child sends its own event only
            finally:
                os._exit(code)
        try:
            status = _wait_child(pid, 30)
        finally:
            _reap(pid)
        assert os.waitstatus_to_exitcode(status) == 0
        got = [json.loads(b) for b in drain(sub, expect=2)]
        by_who = {e["who"]: e for e in got}
        assert sorted(e["who"] for e in got) == ["child", "parent-buffered"]
        assert sub.next_batch(0.2) == []  # the event buffered at fork is sent once, by the parent
        assert by_who["child"]["pid"] == pid and by_who["parent-buffered"]["pid"] == os.getpid()
        d.send("worker-heartbeat", who="parent-after")
        assert [json.loads(b)["who"] for b in drain(sub, expect=1)] == ["parent-after"]
    finally:
        d.close()
        app._reset_connections()


@pytest.mark.timeout(60)
def test_a_forked_child_starts_its_own_drop_count(monkeypatch: pytest.MonkeyPatch) -> None:
    channel = FlakyChannel()
    monkeypatch.setattr(events_mod, "channel_for", lambda app: channel)
    d = EventDispatcher(_memory_app(), "w@h", flush_interval=0.02)
    try:
        for i in range(5):
            d.send("task-started", uuid=str(i))
        wait_until(lambda: d.dropped == 5, 5, message="the parent's drops")
        pid = os.fork()
        if pid == 0:  # the child: report by exit status, never back into pytest
            code = 1
            try:
                channel.down = False
                d.send("task-started", uuid="child")  # the child's first event: it notices the fork
                code = 0 if d.dropped == 0 else 3
            finally:
                os._exit(code)
        try:
            status = _wait_child(pid, 30)
        finally:
            _reap(pid)
        assert d.dropped == 5  # the parent's own count is untouched
        assert os.waitstatus_to_exitcode(status) == 0, "the child reported the parent's dropped events as its own"
    finally:
        d.close()


def _wait_child(pid: int, timeout: float) -> int:
    done, status = wait_until(lambda: (reaped := os.waitpid(pid, os.WNOHANG))[0] and reaped, timeout,
                              message=f"forked child {pid} to exit")
    return int(status)


def _reap(pid: int) -> None:
    """Kill the child this test forked (by its pid) if it is still there."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return
    if not done:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


# --- EventDispatcher over channels that block or fail ---

class BlockingChannel(EventChannel):
    """A broker that hangs: `send` waits until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.got: list[bytes] = []
        self.calls = 0

    def send(self, events: Sequence[bytes]) -> None:
        self.calls += 1
        self.entered.set()
        self.release.wait(30)
        self.got.extend(events)

    def subscribe(self) -> EventSubscription:  # pragma: no cover - not read
        raise NotImplementedError


class FlakyChannel(EventChannel):
    """A broker that is down until `down` is cleared."""

    def __init__(self) -> None:
        self.down = True
        self.attempts = 0
        self.got: list[bytes] = []

    def send(self, events: Sequence[bytes]) -> None:
        self.attempts += 1
        if self.down:
            raise OperationalError("broker down")
        self.got.extend(events)

    def subscribe(self) -> EventSubscription:  # pragma: no cover - not read
        raise NotImplementedError


def test_send_never_blocks_and_drops_exactly_what_exceeds_the_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    channel = BlockingChannel()
    monkeypatch.setattr(events_mod, "channel_for", lambda app: channel)
    d = EventDispatcher(_memory_app(), "w@h", buffer_size=100, flush_interval=0.01)
    try:
        d.send("task-started", uuid="first")
        assert channel.entered.wait(5), "the flush thread never called send"
        # The flush thread is stuck in send (holding the batch of one): the buffer fills, then drops.
        started = time.monotonic()
        for i in range(20_000):
            d.send("task-started", uuid=str(i))
        elapsed = time.monotonic() - started
        assert elapsed < 1.0, f"20,000 sends took {elapsed:.2f}s"
        assert d.dropped == 20_000 - 100
        assert len(d._buffer) == 100
    finally:
        channel.release.set()
    wait_until(lambda: len(channel.got) == 101, 5, message="the buffered events after the broker came back")
    d.close()
    uuids = [json.loads(b)["uuid"] for b in channel.got]
    assert uuids == ["first"] + [str(i) for i in range(100)]  # the oldest were kept, the newest dropped
    assert d.sent == 101 and d.dropped == 19_900


def test_a_failing_channel_drops_counts_warns_once_and_recovers(monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    channel = FlakyChannel()
    monkeypatch.setattr(events_mod, "channel_for", lambda app: channel)
    caplog.set_level(logging.WARNING, logger="celeriac.events")
    d = EventDispatcher(_memory_app(), "w@h", flush_interval=0.02)
    try:
        for i in range(5):
            d.send("task-started", uuid=str(i))
        wait_until(lambda: d.dropped == 5, 5, message="the first events to be dropped")
        attempts = channel.attempts
        for i in range(5, 12):
            d.send("task-started", uuid=str(i))
        wait_until(lambda: d.dropped == 12 and channel.attempts > attempts, 5, message="more drops")
        cannot = [r for r in caplog.records if "cannot send" in r.getMessage()]
        assert len(cannot) == 1, [r.getMessage() for r in caplog.records]
        assert cannot[0].levelno == logging.WARNING and "broker down" in cannot[0].getMessage()
        assert d.sent == 0

        channel.down = False
        for i in range(3):
            d.send("task-started", uuid=f"ok{i}")

        def recovered() -> list[str]:  # the flush thread counts and logs just after the channel took them
            return [r.getMessage() for r in caplog.records if "takes events again" in r.getMessage()] \
                if len(channel.got) == 3 and d.sent == 3 else []

        again = wait_until(recovered, 5, message="events after the broker recovered, and the log line")
        assert [json.loads(b)["uuid"] for b in channel.got] == ["ok0", "ok1", "ok2"]
        assert d.sent == 3 and d.dropped == 12
        assert again == ["events: the broker takes events again (12 dropped meanwhile)"]
        assert len([r for r in caplog.records if "cannot send" in r.getMessage()]) == 1

        channel.down = True  # a new outage warns again
        d.send("task-started", uuid="lost")
        # The count goes up just before the warning is logged: wait for both.
        wait_until(lambda: d.dropped == 13 and len([r for r in caplog.records if "cannot send" in r.getMessage()]) >= 2,
                   5, message="the drop in the second outage, and its warning")
        assert len([r for r in caplog.records if "cannot send" in r.getMessage()]) == 2
    finally:
        d.close()


def test_a_dispatcher_without_any_stream_drops_and_warns(caplog: pytest.LogCaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    app = _memory_app()
    monkeypatch.setattr(app.broker, "event_channel", lambda: None)
    caplog.set_level(logging.WARNING, logger="celeriac.events")
    d = EventDispatcher(app, "w@h", flush_interval=60)
    d.send("task-started", uuid="x")
    d.close()  # never raises
    assert d.dropped == 1 and d.sent == 0
    assert any("events need a shared stream" in r.getMessage() for r in caplog.records)


# --- task-sent events from an app ---

@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[Celeriac]:
    url = f"sqlite:///{tmp_path / 'sent.db'}"
    made = Celeriac("events", broker=url, backend=url, set_as_current=False, task_send_sent_event=True)
    yield made
    if made._sent_events is not None:
        made._sent_events.close()
    made._reset_connections()


def test_publishing_sends_a_task_sent_event(sqlite_app: Celeriac) -> None:
    app = sqlite_app

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    got: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    receiver = app.events.Receiver(app.connection(), handlers={"task-sent": got.append, "*": others.append})
    receiver.subscribe()
    before = time.time()
    res = add.delay(2, 3)
    receiver.capture(limit=1, timeout=10)
    assert len(got) == 1 and others == []
    e = got[0]
    assert e["type"] == "task-sent" and e["uuid"] == res.id and e["name"] == add.name
    assert e["args"] == "(2, 3)" and e["kwargs"] == "{}"
    assert e["retries"] == 0 and e["eta"] is None and e["expires"] is None
    assert e["queue"] == "celery" and e["routing_key"] == "celery" and e["exchange"] == ""
    assert e["root_id"] == res.id and e["parent_id"] is None
    assert e["pid"] == os.getpid() and e["hostname"].endswith(f":{os.getpid()}")
    assert before <= e["timestamp"] <= e["local_received"]
    assert receiver.received == 1

    res2 = add.apply_async((1,), {"y": 2}, queue="other", countdown=60)
    receiver.capture(limit=1, timeout=10)
    e = got[1]
    assert e["uuid"] == res2.id and e["args"] == "(1,)" and e["kwargs"] == "{'y': 2}"
    assert e["queue"] == "other" and e["routing_key"] == "other"
    assert e["eta"] is not None


def test_no_task_sent_event_when_the_setting_is_off(sqlite_app: Celeriac) -> None:
    app = sqlite_app
    app.conf.task_send_sent_event = False

    @app.task
    def mul(x: int, y: int) -> int:
        return x * y

    seen: list[dict[str, Any]] = []
    receiver = app.events.Receiver(app.connection(), handlers={"*": seen.append})
    receiver.subscribe()
    quiet = mul.delay(1, 1)
    receiver.capture(timeout=0.5)
    assert seen == []
    assert app._sent_events is None  # no dispatcher (and no thread) for an app that sends none
    app.conf.task_send_sent_event = True  # the control: the same path sends once it is on
    loud = mul.delay(2, 2)
    receiver.capture(limit=1, timeout=10)
    assert [e["uuid"] for e in seen] == [loud.id]
    assert quiet.id != loud.id
