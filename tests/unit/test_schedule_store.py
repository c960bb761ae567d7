"""The ScheduleStore contract (celeriac/brokers/base.py): one suite, every store beat can use.

- broker-native stores (memory, SQLite, Redis broker): `fire` publishes onto that broker, so
  the test fetches the messages back from it;
- stores in a result store (SQLite; Redis in claim mode), used beside a broker that keeps no
  state (RabbitMQ): `fire` hands the messages to the publish callback, which the test records.

Lease expiry is the only thing waited for (a 0.2 s lease, polled with a deadline).
"""

from __future__ import annotations

import math
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pytest

from celeriac.backends import create_result_store
from celeriac.brokers import Broker, Outgoing, create_broker
from celeriac.brokers.base import LeaseState, ScheduleStore, Tick
from helpers import fresh_postgres_url, fresh_redis_url, wait_until

KINDS = ["memory-broker", "sqlite-broker", "redis-broker", "postgres-broker", "sqlite-results", "redis-results-claim",
         "postgres-results"]
QUEUE = "celery"


@dataclass
class Harness:
    """One store under test, how to open more of it, and what it published."""

    kind: str
    url: str
    name: str
    store: ScheduleStore
    opener: Callable[[str, Callable[[Sequence[Outgoing]], None] | None], ScheduleStore]
    broker: Broker | None = None  # where broker-native stores publish
    received: list[Outgoing] = field(default_factory=list)  # what callback stores handed over
    closers: list[Any] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def native(self) -> bool:
        return self.broker is not None

    def callback(self, messages: Sequence[Outgoing]) -> None:
        with self._lock:
            self.received.extend(messages)

    def another(self, publish: Callable[[Sequence[Outgoing]], None] | None = None) -> ScheduleStore:
        """A second store on the same state: another beat process, sharing file or server."""
        return self.opener(self.name, publish)

    def published(self) -> list[tuple[str, int, bytes]]:
        """(queue, priority, payload) of everything published since the last call."""
        if self.broker is not None:
            got = self.broker.fetch([QUEUE, "other"], "w1", "w1-0", 1000, timeout=0)
            if got:
                self.broker.ack(got)
            return sorted((d.queue, d.priority, d.payload) for d in got)
        with self._lock:
            out, self.received[:] = list(self.received), []
        return sorted((m.queue, m.priority, m.payload) for m in out)


def make_harness(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Harness:
    name = f"beat-{uuid.uuid4().hex[:8]}"
    closers: list[Any] = []
    if kind.endswith("-broker"):
        if kind == "memory-broker":
            url = f"memory://sched-{uuid.uuid4().hex}"
        elif kind == "sqlite-broker":
            url = f"sqlite:///{tmp_path / 'broker.db'}"
        elif kind == "postgres-broker":
            url = fresh_postgres_url(request)
        else:
            url = fresh_redis_url(request)
        broker = create_broker(url)
        closers.append(broker)

        def open_native(store_name: str, publish: Any) -> ScheduleStore:
            other = create_broker(url)
            closers.append(other)
            # beat passes the app's publish: with the SQLite broker it joins fire's transaction
            store = other.schedule_store(store_name, publish or other.publish)
            assert store is not None
            return store

        h = Harness(kind, url, name, None, open_native, broker=broker, closers=closers)  # type: ignore[arg-type]
        h.store = open_native(name, None)
        return h
    url = (f"sqlite:///{tmp_path / 'results.db'}" if kind == "sqlite-results" else fresh_postgres_url(request)
           if kind == "postgres-results" else fresh_redis_url(request))

    def open_results(store_name: str, publish: Any) -> ScheduleStore:
        results = create_result_store(url)
        closers.append(results)
        store = results.schedule_store(store_name, publish or h.callback)
        assert store is not None
        return store

    h = Harness(kind, url, name, None, open_results, closers=closers)  # type: ignore[arg-type]
    h.store = open_results(name, None)
    return h


@pytest.fixture(params=KINDS)
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    harness = make_harness(str(request.param), tmp_path, request)
    yield harness
    for thing in harness.closers:
        thing.close()


def msg(n: int | str, priority: int = 0, queue: str = QUEUE) -> Outgoing:
    return Outgoing(queue, f"payload-{n}".encode(), priority, None)


def tick(entry: str, at: float, message: Outgoing | None | str = "auto") -> Tick:
    if message == "auto":
        message = msg(f"{entry}@{at!r}")
    return Tick(entry, at, message)  # type: ignore[arg-type]


def row(message: Outgoing) -> tuple[str, int, bytes]:
    return (message.queue, message.priority, message.payload)


def expire(store: ScheduleStore, holder: str) -> None:
    wait_until(lambda: store.lease_state().holder != holder, 5, message=f"{holder}'s lease to run out")


# --- the lease ---

def test_nobody_leads_at_first(h: Harness) -> None:
    state = h.store.lease_state()
    assert isinstance(state, LeaseState)
    assert state.holder is None and state.token == 0 and state.expires_in <= 0
    assert h.store.last_ticks() == {}


def test_first_lease_gets_a_token(h: Harness) -> None:
    token = h.store.lease("a", 10)
    assert isinstance(token, int) and token >= 1
    state = h.store.lease_state()
    assert state.holder == "a" and state.token == token
    assert 9 < state.expires_in <= 10


def test_a_second_holder_waits_while_the_lease_is_current(h: Harness) -> None:
    token = h.store.lease("a", 10)
    other = h.another()
    assert other.lease("b", 10) is None
    assert h.store.lease("b", 10) is None
    state = other.lease_state()
    assert state.holder == "a" and state.token == token


def test_renewal_keeps_the_token_and_extends(h: Harness) -> None:
    token = h.store.lease("a", 5)
    assert h.store.lease("a", 30) == token
    assert h.another().lease("a", 30) == token  # the holder's identity, not the store object, counts
    state = h.store.lease_state()
    assert state.token == token and 25 < state.expires_in <= 30


def test_after_expiry_another_holder_gets_a_higher_token(h: Harness) -> None:
    first = h.store.lease("a", 0.2)
    assert first is not None
    other = h.another()
    expire(other, "a")
    second = other.lease("b", 10)
    assert second is not None and second > first
    assert h.store.lease("a", 10) is None  # a came back too late
    state = h.store.lease_state()
    assert (state.holder, state.token) == ("b", second) and 9 < state.expires_in <= 10
    assert h.store.fire("a", first, [tick("e", 1.0)]) is None
    assert h.published() == [] and h.store.last_ticks() == {}


def test_the_same_holder_after_its_own_expiry_gets_a_new_token(h: Harness) -> None:
    # whatever happened while it had no lease, its old token must not write again
    first = h.store.lease("a", 0.2)
    assert first is not None
    expire(h.store, "a")
    assert h.store.fire("a", first, [tick("e", 1.0)]) is None
    second = h.store.lease("a", 10)
    assert second is not None and second > first
    assert h.store.fire("a", first, [tick("e", 1.0)]) is None
    assert h.store.fire("a", second, [tick("e", 1.0)]) == ["e"]


def test_release_lets_another_take_over_at_once(h: Harness) -> None:
    first = h.store.lease("a", 60)
    assert first is not None
    other = h.another()
    other.release("b")  # not the holder: nothing happens
    assert other.lease("b", 60) is None
    h.store.release("a")
    state = other.lease_state()
    assert state.holder is None and state.expires_in <= 0
    second = other.lease("b", 60)
    assert second is not None and second > first
    assert other.lease_state().holder == "b"
    assert h.store.fire("a", first, [tick("e", 1.0)]) is None
    assert h.store.fire("b", second, [tick("e", 1.0)]) == ["e"]


def test_release_then_lease_again_by_the_same_holder_changes_the_token(h: Harness) -> None:
    first = h.store.lease("a", 60)
    h.store.release("a")
    second = h.store.lease("a", 60)
    assert first is not None and second is not None and second > first


def test_stores_with_different_names_are_independent(h: Harness) -> None:
    other = h.opener(h.name + "-other", None)
    ta = h.store.lease("a", 60)
    tb = other.lease("b", 60)
    assert ta is not None and tb is not None
    assert h.store.fire("a", ta, [tick("e", 5.0)]) == ["e"]
    assert other.last_ticks() == {}
    assert other.fire("b", tb, [tick("e", 3.0)]) == ["e"]
    assert h.store.last_ticks() == {"e": 5.0} and other.last_ticks() == {"e": 3.0}
    assert h.store.lease_state().holder == "a" and other.lease_state().holder == "b"


# --- fire ---

def test_fire_records_and_publishes(h: Harness) -> None:
    token = h.store.lease("a", 60)
    assert token is not None
    m1, m2, m3 = msg(1), msg(2, priority=7), msg(3, queue="other")
    fired = h.store.fire("a", token, [Tick("e1", 100.0, m1), Tick("e2", 200.5, m2), Tick("e3", 300.25, m3)])
    assert fired == ["e1", "e2", "e3"]
    assert h.store.last_ticks() == {"e1": 100.0, "e2": 200.5, "e3": 300.25}
    assert h.another().last_ticks() == {"e1": 100.0, "e2": 200.5, "e3": 300.25}
    assert h.published() == sorted([row(m1), row(m2), row(m3)])
    # the next ticks of the same entries go out too
    assert h.store.fire("a", token, [Tick("e1", 110.0, msg(4))]) == ["e1"]
    assert h.published() == [row(msg(4))]
    assert h.store.last_ticks()["e1"] == 110.0


def test_fire_with_an_empty_list(h: Harness) -> None:
    token = h.store.lease("a", 60)
    assert token is not None
    assert h.store.fire("a", token, []) == []
    assert h.store.fire("b", token, []) is None


@pytest.mark.parametrize("who, token_delta", [("a", 1), ("a", -1), ("b", 0), ("", 0)])
def test_fire_by_a_non_holder_or_with_a_wrong_token_does_nothing(h: Harness, who: str, token_delta: int) -> None:
    token = h.store.lease("a", 60)
    assert token is not None
    assert h.store.fire("a", token, [tick("e", 10.0)]) == ["e"]
    h.published()
    assert h.store.fire(who, token + token_delta, [tick("e", 20.0), tick("f", 20.0)]) is None
    assert h.published() == []
    assert h.store.last_ticks() == {"e": 10.0}


def test_fire_without_any_lease_does_nothing(h: Harness) -> None:
    assert h.store.fire("a", 0, [tick("e", 10.0)]) is None
    assert h.store.fire("a", 1, [tick("e", 10.0)]) is None
    assert h.published() == [] and h.store.last_ticks() == {}


def test_fire_after_release_does_nothing(h: Harness) -> None:
    token = h.store.lease("a", 60)
    assert token is not None
    h.store.release("a")
    assert h.store.fire("a", token, [tick("e", 10.0)]) is None
    assert h.published() == [] and h.store.last_ticks() == {}


def test_a_tick_not_newer_than_the_recorded_one_is_skipped(h: Harness) -> None:
    token = h.store.lease("a", 60)
    assert token is not None
    assert h.store.fire("a", token, [tick("e1", 100.0), tick("e2", 50.0)]) == ["e1", "e2"]
    h.published()
    fired = h.store.fire("a", token, [tick("e1", 100.0), tick("e1", 99.5), tick("e2", 50.0),
                                      tick("e3", 7.0), tick("e2", 50.5)])
    assert fired == ["e3", "e2"]
    assert h.published() == sorted([row(msg(f"e3@{7.0!r}")), row(msg(f"e2@{50.5!r}"))])
    assert h.store.last_ticks() == {"e1": 100.0, "e2": 50.5, "e3": 7.0}


def test_only_ticks_newer_than_the_recorded_one_by_a_hair_pass(h: Harness) -> None:
    token = h.store.lease("a", 60)
    assert token is not None
    t = 1767225600.1234567
    assert h.store.fire("a", token, [tick("e", t)]) == ["e"]
    assert h.store.fire("a", token, [tick("e", t)]) == []
    assert h.store.fire("a", token, [tick("e", math.nextafter(t, 0))]) == []
    up = math.nextafter(t, math.inf)
    assert h.store.fire("a", token, [tick("e", up)]) == ["e"]
    assert h.store.last_ticks() == {"e": up}
    assert len(h.published()) == 2



@pytest.mark.parametrize("kind", KINDS)
def test_ticks_of_one_batch_are_checked_one_after_another(kind: str, tmp_path: Path,
                                                          request: pytest.FixtureRequest) -> None:
    harness = make_harness(kind, tmp_path, request)
    try:
        token = harness.store.lease("a", 60)
        assert token is not None
        fired = harness.store.fire("a", token, [tick("e", 20.0), tick("e", 20.0), tick("e", 10.0)])
        assert fired == ["e"]
        assert harness.published() == [row(msg(f"e@{20.0!r}"))]
        assert harness.store.last_ticks() == {"e": 20.0}
    finally:
        for thing in harness.closers:
            thing.close()


def test_a_tick_without_a_message_is_recorded_but_not_published(h: Harness) -> None:
    token = h.store.lease("a", 60)
    assert token is not None
    assert h.store.fire("a", token, [Tick("skip", 500.0, None), Tick("run", 500.0, msg("run"))]) == ["skip", "run"]
    assert h.published() == [row(msg("run"))]
    assert h.store.last_ticks() == {"skip": 500.0, "run": 500.0}
    assert h.store.recover() == 0
    assert h.published() == []
    # and the recorded anchor fences later ticks like any other
    assert h.store.fire("a", token, [tick("skip", 400.0), tick("skip", 560.0)]) == ["skip"]
    assert h.published() == [row(msg(f"skip@{560.0!r}"))]


@pytest.mark.parametrize("value", [
    0.0, 1e-9, 0.1 + 0.2, 1767225600.1234567, 1767225600.0, 4102444800.000001, 1.7976931348623157e308 / 1e300,
    123456789.98765433,
])
def test_last_ticks_are_exact_floats(h: Harness, value: float) -> None:
    token = h.store.lease("a", 60)
    assert token is not None
    assert h.store.fire("a", token, [Tick("e", value, None)]) == ["e"]
    got = h.another().last_ticks()
    assert got == {"e": value}
    assert isinstance(got["e"], float) and got["e"].hex() == value.hex()


def test_entry_names_are_kept_as_given(h: Harness) -> None:
    token = h.store.lease("a", 60)
    assert token is not None
    names = ["add every 10s", "<@task: proj.add of proj>(2, 3)", "ünïcode-entry", "a:b@c\\n"]
    assert h.store.fire("a", token, [Tick(n, 1.0 + i, None) for i, n in enumerate(names)]) == names
    assert h.store.last_ticks() == {n: 1.0 + i for i, n in enumerate(names)}



@pytest.mark.parametrize("kind", KINDS)
def test_many_threads_firing_the_same_ticks_publish_each_once(kind: str, tmp_path: Path,
                                                             request: pytest.FixtureRequest) -> None:
    h = make_harness(kind, tmp_path, request)
    try:
        _many_threads(h)
    finally:
        for thing in h.closers:
            thing.close()


def _many_threads(h: Harness) -> None:
    store = h.store
    if not h.native:
        # The publish callback holds on (up to 0.5 s) until a second publish call arrives: one
        # never does when each tick is published once, so this only widens the window a
        # duplicate would need, and makes it certain instead of occasional.
        cond, count = threading.Condition(), [0]

        def holding(messages: Sequence[Outgoing]) -> None:
            h.callback(messages)
            with cond:
                count[0] += 1
                cond.notify_all()
                cond.wait_for(lambda: count[0] >= 2, timeout=0.5)

        store = h.another(holding)
    token = store.lease("a", 60)
    assert token is not None
    ticks = [tick(f"e{i}", 1000.0 + i) for i in range(20)] + [tick(f"e{i}", 2000.0 + i) for i in range(5)]
    barrier = threading.Barrier(8)
    results: list[list[str] | None] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def fire() -> None:
        try:
            barrier.wait(10)
            got = store.fire("a", token, ticks)
            with lock:
                results.append(got)
        except BaseException as exc:  # noqa: BLE001 - reported below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=fire) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(results) == 8
    recorded = sorted(e for got in results for e in (got or []))
    # every entry recorded exactly as often as it has ticks in total, across all threads
    assert recorded == sorted([f"e{i}" for i in range(20)] + [f"e{i}" for i in range(5)])
    assert h.published() == sorted(row(t.message) for t in ticks if t.message is not None)
    assert h.store.last_ticks() == {f"e{i}": (2000.0 + i if i < 5 else 1000.0 + i) for i in range(20)}


def test_a_failing_publish_leaves_the_tick_unrecorded_sqlite(tmp_path: Path) -> None:
    """SQLite: fire publishes inside its write transaction, so a failed publish records nothing."""
    url = f"sqlite:///{tmp_path / 'results.db'}"
    calls: list[list[Outgoing]] = []

    def broken(messages: Sequence[Outgoing]) -> None:
        raise RuntimeError("broker down")

    results = create_result_store(url)
    try:
        store = results.schedule_store("fail", broken)
        assert store is not None
        token = store.lease("a", 60)
        assert token is not None
        with pytest.raises(RuntimeError, match="broker down"):
            store.fire("a", token, [tick("e", 10.0)])
        assert store.last_ticks() == {}
        working = results.schedule_store("fail", lambda m: calls.append(list(m)))
        assert working is not None
        assert working.fire("a", token, [tick("e", 10.0)]) == ["e"]
        assert calls == [[msg(f"e@{10.0!r}")]]
        assert working.last_ticks() == {"e": 10.0}
    finally:
        results.close()


def test_a_failing_publish_leaves_the_tick_unrecorded_sqlite_broker(tmp_path: Path) -> None:
    """With the SQLite broker the publish joins fire's transaction: both or neither."""
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    broker = create_broker(url)
    try:
        def half_then_fail(messages: Sequence[Outgoing]) -> None:
            broker.publish(messages)
            raise RuntimeError("after the insert")

        store = broker.schedule_store("both", half_then_fail)
        assert store is not None
        token = store.lease("a", 60)
        assert token is not None
        with pytest.raises(RuntimeError, match="after the insert"):
            store.fire("a", token, [tick("e", 10.0)])
        assert store.last_ticks() == {}
        assert broker.fetch([QUEUE], "w", "w-0", 10, timeout=0) == []  # rolled back with the record
    finally:
        broker.close()


# --- claim mode (Redis result store beside another broker): claim, publish, confirm ---

@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    return fresh_redis_url(request)


def test_claim_mode_publishes_and_confirms(redis_url: str) -> None:
    results = create_result_store(redis_url)
    got: list[Outgoing] = []
    try:
        store = results.schedule_store("claim", got.extend)
        assert store is not None
        token = store.lease("a", 60)
        assert token is not None
        m = Outgoing("q", b"body\nwith\nnewlines", 9, 1800000000.25)
        assert store.fire("a", token, [Tick("e", 1.0, m)]) == ["e"]
        assert got == [m]
        assert store.recover() == 0  # confirmed: nothing pending
        assert got == [m]
    finally:
        results.close()


def test_claim_mode_a_failed_publish_is_recovered_by_the_next_leader(redis_url: str) -> None:
    first_results, second_results = create_result_store(redis_url), create_result_store(redis_url)
    sent: list[Outgoing] = []
    try:
        def down(messages: Sequence[Outgoing]) -> None:
            raise ConnectionError("rabbitmq down")

        dying = first_results.schedule_store("claim", down)
        assert dying is not None
        token = dying.lease("old", 0.2)
        assert token is not None
        m1, m2 = Outgoing(QUEUE, b"tick-1", 3, None), Outgoing(QUEUE, b"tick-2", 0, None)
        with pytest.raises(ConnectionError):
            dying.fire("old", token, [Tick("e1", 10.0, m1), Tick("e2", 20.0, m2), Tick("e3", 30.0, None)])
        # claimed (recorded) but not published: pending until someone confirms it
        assert dying.last_ticks() == {"e1": 10.0, "e2": 20.0, "e3": 30.0}
        leader = second_results.schedule_store("claim", sent.extend)
        assert leader is not None
        expire(leader, "old")
        assert leader.lease("new", 60) is not None
        assert leader.recover() == 2
        assert sorted((m.queue, m.priority, m.payload, m.eta) for m in sent) == [
            (QUEUE, 0, b"tick-2", None), (QUEUE, 3, b"tick-1", None)]
        assert leader.recover() == 0
        assert len(sent) == 2
        # the recovered ticks stay recorded: firing them again sends nothing
        new_token = leader.lease("new", 60)
        assert new_token is not None
        assert leader.fire("new", new_token, [Tick("e1", 10.0, m1)]) == []
        assert len(sent) == 2
    finally:
        first_results.close()
        second_results.close()


def test_claim_mode_a_concurrent_fire_does_not_publish_a_pending_tick_again(redis_url: str) -> None:
    results = create_result_store(redis_url)
    sent: list[bytes] = []
    try:
        ticks = [Tick("e", 10.0, Outgoing(QUEUE, b"once", 0, None))]
        store: ScheduleStore | None = None

        def publish(messages: Sequence[Outgoing]) -> None:
            first_call = not sent
            sent.extend(m.payload for m in messages)
            if first_call:
                # while this beat thread is still publishing, another thread of the same
                # leader fires the same tick (it is already claimed, so it claims nothing)
                other = threading.Thread(target=lambda: store.fire("a", token, ticks))  # type: ignore[union-attr]
                other.start()
                other.join(10)

        store = results.schedule_store("race", publish)
        assert store is not None
        token = store.lease("a", 60)
        assert token is not None
        store.fire("a", token, ticks)
        assert sent == [b"once"]
    finally:
        results.close()
