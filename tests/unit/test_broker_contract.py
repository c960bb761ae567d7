"""The broker interface contract (celeriac/brokers/base.py), one suite run on every broker.

Every test gets a fresh broker: `memory://<unique name>` or `sqlite:///<tmp_path>/b.db`.
No worker processes: the test plays the worker (fetch/ack/release/heartbeat) itself.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from celeriac.brokers import Broker, Outgoing, create_broker
from helpers import fresh_postgres_url, wait_until
from celeriac.transports.memory.broker import MemoryBroker
from celeriac.transports.sqlite.broker import SQLiteBroker

BROKER_KINDS = ["memory", "sqlite", "redis", "redis-cluster", "postgres"]


def make_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest | None = None) -> str:
    if kind == "memory":
        return f"memory://contract-{uuid.uuid4().hex}"
    if kind == "redis-cluster":
        assert request is not None
        from helpers import fresh_redis_cluster_url
        return fresh_redis_cluster_url(request)
    if kind == "postgres":
        assert request is not None
        return fresh_postgres_url(request)
    if kind == "redis":
        assert request is not None
        server = request.getfixturevalue("redis_server")
        if not server.ping():
            server.start()
        server.flush()
        return str(server.url)
    return f"sqlite:///{tmp_path / 'b.db'}"


@pytest.fixture(params=BROKER_KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return make_url(str(request.param), tmp_path, request)


@pytest.fixture
def broker(url: str) -> Iterator[Broker]:
    b = create_broker(url)
    yield b
    b.close()




def pub(broker: Broker, queue: str, *payloads: bytes, priority: int = 0, eta: float | None = None) -> None:
    broker.publish([Outgoing(queue, p, priority, eta) for p in payloads])


def fetch_all(broker: Broker, queues: list[str], worker: str = "w1", owner: str = "w1-0",
              limit: int = 1000) -> list[Any]:
    return broker.fetch(queues, worker, owner, limit, timeout=0)


def sizes(broker: Broker, queue: str) -> dict[str, int]:
    return broker.queue_sizes([queue])[queue]


# --- the URL picks the implementation ---

def test_url_picks_the_implementation(url: str, broker: Broker) -> None:
    from celeriac.transports.postgres.broker import PostgresBroker
    from celeriac.transports.redis.broker import RedisBroker
    expected = {"memory": MemoryBroker, "sqlite": SQLiteBroker, "redis": RedisBroker,
                "redis+cluster": RedisBroker,
                "postgresql": PostgresBroker}[url.split(":", 1)[0]]
    assert type(broker) is expected
    assert broker.url == url


# --- publish / fetch ---

def test_publish_then_fetch_is_fifo(broker: Broker) -> None:
    payloads = [f"m{i}".encode() for i in range(20)]
    pub(broker, "q", *payloads[:10])
    pub(broker, "q", *payloads[10:])
    got = fetch_all(broker, ["q"])
    assert [d.payload for d in got] == payloads
    assert all(d.queue == "q" and d.deliveries == 1 for d in got)
    assert len({d.tag for d in got}) == 20


def test_fetch_respects_limit_and_leaves_the_rest(broker: Broker) -> None:
    pub(broker, "q", *[f"m{i}".encode() for i in range(5)])
    first = broker.fetch(["q"], "w1", "w1-0", 2, timeout=0)
    assert [d.payload for d in first] == [b"m0", b"m1"]
    assert sizes(broker, "q") == {"ready": 3, "reserved": 2, "delayed": 0}
    rest = broker.fetch(["q"], "w1", "w1-0", 10, timeout=0)
    assert [d.payload for d in rest] == [b"m2", b"m3", b"m4"]


def test_fetch_only_from_the_asked_queues(broker: Broker) -> None:
    pub(broker, "other", b"x")
    assert fetch_all(broker, ["q"]) == []
    assert sizes(broker, "other")["ready"] == 1


def test_payload_bytes_are_kept_exactly(broker: Broker) -> None:
    payload = bytes(range(256)) + b"\n\x00tail"
    pub(broker, "q", payload)
    [d] = fetch_all(broker, ["q"])
    assert d.payload == payload


def test_priority_higher_first_fifo_within_priority(broker: Broker) -> None:
    broker.publish([
        Outgoing("q", b"p0-a", 0), Outgoing("q", b"p5-a", 5), Outgoing("q", b"p9-a", 9),
        Outgoing("q", b"p5-b", 5), Outgoing("q", b"p0-b", 0), Outgoing("q", b"p9-b", 9),
        Outgoing("q", b"p1", 1),
    ])
    got = fetch_all(broker, ["q"])
    assert [d.payload for d in got] == [b"p9-a", b"p9-b", b"p5-a", b"p5-b", b"p1", b"p0-a", b"p0-b"]
    assert [d.priority for d in got] == [9, 9, 5, 5, 1, 0, 0]


def test_priority_is_clamped_to_0_9(broker: Broker) -> None:
    broker.publish([Outgoing("q", b"low", -5), Outgoing("q", b"mid", 4), Outgoing("q", b"high", 42),
                    Outgoing("q", b"nine", 9), Outgoing("q", b"zero", 0)])
    got = fetch_all(broker, ["q"])
    # 42 -> 9 (published before "nine", so first among the 9s); -5 -> 0 (FIFO among the 0s).
    assert [d.payload for d in got] == [b"high", b"nine", b"mid", b"low", b"zero"]
    assert [d.priority for d in got] == [9, 9, 4, 0, 0]


def test_fetch_across_several_queues(broker: Broker) -> None:
    broker.publish([Outgoing("a", b"a1", 1), Outgoing("b", b"b1", 1), Outgoing("a", b"a2", 1),
                    Outgoing("b", b"b-high", 7), Outgoing("c", b"c-not-asked", 9)])
    got = fetch_all(broker, ["a", "b"])
    assert [d.payload for d in got] == [b"b-high", b"a1", b"b1", b"a2"]
    assert [d.queue for d in got] == ["b", "a", "b", "a"]
    assert sizes(broker, "c")["ready"] == 1


def test_fetch_across_queues_respects_limit_by_priority(broker: Broker) -> None:
    broker.publish([Outgoing("a", f"a{i}".encode(), 0) for i in range(5)]
                   + [Outgoing("b", f"b{i}".encode(), 3) for i in range(5)])
    got = broker.fetch(["a", "b"], "w1", "w1-0", 3, timeout=0)
    assert [d.payload for d in got] == [b"b0", b"b1", b"b2"]


# --- delayed messages ---

def test_delayed_message_not_fetchable_before_due(broker: Broker) -> None:
    pub(broker, "q", b"later", eta=time.time() + 60)
    assert fetch_all(broker, ["q"]) == []
    assert sizes(broker, "q") == {"ready": 0, "reserved": 0, "delayed": 1}


def test_delayed_message_fetchable_when_due(broker: Broker) -> None:
    due = time.time() + 0.3
    pub(broker, "q", b"later", eta=due)
    pub(broker, "q", b"now")
    now = fetch_all(broker, ["q"])
    assert [d.payload for d in now] == [b"now"]
    broker.ack(now)
    got = broker.fetch(["q"], "w1", "w1-0", 10, timeout=5)
    assert time.time() >= due - 0.01
    assert [d.payload for d in got] == [b"later"]
    assert got[0].deliveries == 1
    assert sizes(broker, "q") == {"ready": 0, "reserved": 1, "delayed": 0}


def test_past_eta_is_ready_at_once(broker: Broker) -> None:
    pub(broker, "q", b"overdue", eta=time.time() - 10)
    assert sizes(broker, "q")["delayed"] == 0
    assert [d.payload for d in fetch_all(broker, ["q"])] == [b"overdue"]


def test_delayed_messages_keep_their_priority(broker: Broker) -> None:
    eta = time.time() + 0.2
    broker.publish([Outgoing("q", b"d-low", 1, eta), Outgoing("q", b"d-high", 8, eta)])
    got = wait_until(lambda: fetch_all(broker, ["q"]), message="delayed messages due")
    if len(got) == 1:  # the two became due in separate fetches
        got += wait_until(lambda: fetch_all(broker, ["q"]), message="second delayed message")
    assert {d.payload for d in got} == {b"d-low", b"d-high"}
    assert {d.payload: d.priority for d in got} == {b"d-low": 1, b"d-high": 8}


# --- ack / release ---

def test_ack_removes(broker: Broker) -> None:
    pub(broker, "q", b"a", b"b", b"c")
    got = fetch_all(broker, ["q"])
    broker.ack(got[:2])
    assert sizes(broker, "q") == {"ready": 0, "reserved": 1, "delayed": 0}
    broker.ack(got[2:])
    assert sizes(broker, "q") == {"ready": 0, "reserved": 0, "delayed": 0}
    # Acked messages are gone for good: nothing to recover, nothing to fetch.
    broker.unregister("w1")
    assert broker.recover() == 0
    assert fetch_all(broker, ["q"]) == []


def test_fetched_messages_are_not_handed_out_twice(broker: Broker) -> None:
    pub(broker, "q", b"a", b"b")
    first = fetch_all(broker, ["q"], worker="w1", owner="w1-0")
    assert fetch_all(broker, ["q"], worker="w2", owner="w2-0") == []
    assert len(first) == 2


def test_release_gives_back_without_counting_the_delivery(broker: Broker) -> None:
    pub(broker, "q", b"a", b"b")
    got = fetch_all(broker, ["q"])
    assert [d.deliveries for d in got] == [1, 1]
    broker.release(got)
    assert sizes(broker, "q") == {"ready": 2, "reserved": 0, "delayed": 0}
    again = fetch_all(broker, ["q"], worker="w2", owner="w2-0")
    assert sorted(d.payload for d in again) == [b"a", b"b"]
    assert [d.deliveries for d in again] == [1, 1]
    # A message delivered twice (not released) does count.
    broker.release([again[0]])
    broker.unregister("w2")  # gives back again[1] keeping its count
    third = {d.payload: d.deliveries for d in fetch_all(broker, ["q"], worker="w3", owner="w3-0")}
    assert third[again[0].payload] == 1
    assert third[again[1].payload] == 2


# --- crash handling ---

def test_requeue_owner_keeps_the_count_only_for_the_running_message(broker: Broker) -> None:
    pub(broker, "q", b"running", b"prefetched-1", b"prefetched-2")
    pub(broker, "q", b"other-slot")
    held = broker.fetch(["q"], "w1", "w1-slot0", 3, timeout=0)
    other = broker.fetch(["q"], "w1", "w1-slot1", 1, timeout=0)
    assert [d.payload for d in held] == [b"running", b"prefetched-1", b"prefetched-2"]
    assert [d.payload for d in other] == [b"other-slot"]

    assert broker.requeue_owner("w1-slot0", held[0].tag) == 3
    assert sizes(broker, "q") == {"ready": 3, "reserved": 1, "delayed": 0}
    again = {d.payload: d.deliveries for d in fetch_all(broker, ["q"], worker="w2", owner="w2-0")}
    assert again == {b"running": 2, b"prefetched-1": 1, b"prefetched-2": 1}
    # The other slot of the same worker still holds its message.
    assert sizes(broker, "q")["reserved"] == 4


def test_requeue_owner_without_running_message(broker: Broker) -> None:
    pub(broker, "q", b"a", b"b")
    fetch_all(broker, ["q"], owner="w1-slot0")
    assert broker.requeue_owner("w1-slot0", None) == 2
    assert [d.deliveries for d in fetch_all(broker, ["q"])] == [1, 1]


def test_requeue_owner_of_unknown_owner_is_zero(broker: Broker) -> None:
    pub(broker, "q", b"a")
    fetch_all(broker, ["q"], owner="w1-slot0")
    assert broker.requeue_owner("nobody", None) == 0
    assert sizes(broker, "q")["reserved"] == 1


def test_recover_gives_back_only_messages_of_expired_workers(broker: Broker) -> None:
    # 2 s: long enough that a loaded machine still lists it after the two fetches below.
    broker.heartbeat("dead", ttl=2.0, info={"pid": 1})
    broker.heartbeat("live", ttl=60, info={"pid": 2})
    pub(broker, "q", b"held-by-dead", b"held-by-live")
    [d_dead] = broker.fetch(["q"], "dead", "dead-0", 1, timeout=0)
    [d_live] = broker.fetch(["q"], "live", "live-0", 1, timeout=0)
    assert set(broker.live_workers()) == {"dead", "live"}
    assert broker.live_workers()["live"] == {"pid": 2}

    # While both leases are current nothing is recovered, however long the tasks take.
    assert broker.recover() == 0
    assert sizes(broker, "q") == {"ready": 0, "reserved": 2, "delayed": 0}

    wait_until(lambda: "dead" not in broker.live_workers(), message="the lease of 'dead' to expire")
    assert broker.recover() == 1
    assert sizes(broker, "q") == {"ready": 1, "reserved": 1, "delayed": 0}
    [again] = fetch_all(broker, ["q"], worker="live", owner="live-1")
    assert again.payload == d_dead.payload == b"held-by-dead"
    assert again.deliveries == 2  # the crash may have been caused by it: the delivery counts
    assert d_live.payload == b"held-by-live"
    assert broker.recover() == 0
    assert set(broker.live_workers()) == {"live"}


def test_heartbeat_renews_the_lease(broker: Broker) -> None:
    # A 1 s lease renewed every 0.2 s for three leases (shorter ones could lapse on a loaded
    # machine between a renewal and the check that follows it).
    broker.heartbeat("w1", ttl=1.0)
    pub(broker, "q", b"a")
    fetch_all(broker, ["q"], worker="w1")
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        broker.heartbeat("w1", ttl=1.0, info={"n": 1})
        assert broker.recover() == 0
        time.sleep(0.2)
    assert broker.live_workers() == {"w1": {"n": 1}}
    assert sizes(broker, "q")["reserved"] == 1


def test_unregister_releases_what_the_worker_holds(broker: Broker) -> None:
    broker.heartbeat("w1", ttl=60)
    broker.heartbeat("w2", ttl=60)
    pub(broker, "q", b"a", b"b", b"c")
    broker.fetch(["q"], "w1", "w1-0", 1, timeout=0)
    broker.fetch(["q"], "w1", "w1-1", 1, timeout=0)
    broker.fetch(["q"], "w2", "w2-0", 1, timeout=0)
    assert broker.unregister("w1") == 2
    assert "w1" not in broker.live_workers()
    assert "w2" in broker.live_workers()
    assert sizes(broker, "q") == {"ready": 2, "reserved": 1, "delayed": 0}
    assert sorted(d.payload for d in fetch_all(broker, ["q"], worker="w3")) == [b"a", b"b"]
    assert broker.unregister("never-seen") == 0


# --- dead letters ---

def test_dead_letter_list_and_requeue(broker: Broker) -> None:
    pub(broker, "q", b"poison-1", b"poison-2", b"fine")
    d1, d2, fine = fetch_all(broker, ["q"])
    before = time.time()
    broker.dead_letter([(d1, "killed its worker 5 times")])
    broker.dead_letter([(d2, "cannot decode")])
    broker.ack([fine])
    assert sizes(broker, "q") == {"ready": 0, "reserved": 0, "delayed": 0}

    letters = broker.dead_letters()
    assert [dl.payload for dl in letters] == [b"poison-2", b"poison-1"]  # newest first
    assert [dl.reason for dl in letters] == ["cannot decode", "killed its worker 5 times"]
    assert all(dl.queue == "q" and dl.deliveries == 1 for dl in letters)
    assert all(before - 1 <= dl.at <= time.time() + 1 for dl in letters)
    assert len({dl.id for dl in letters}) == 2
    assert [dl.payload for dl in broker.dead_letters(limit=1)] == [b"poison-2"]

    # Dead letters survive recovery of their worker: they were acked.
    broker.unregister("w1")
    assert broker.recover() == 0

    assert broker.requeue_dead_letters([letters[1].id]) == 1
    assert [dl.payload for dl in broker.dead_letters()] == [b"poison-2"]
    [back] = fetch_all(broker, ["q"])
    assert back.payload == b"poison-1"
    assert back.deliveries == 1  # a fresh start, or it would be dead-lettered again at once

    assert broker.requeue_dead_letters() == 1
    assert broker.dead_letters() == []
    assert [d.payload for d in fetch_all(broker, ["q"])] == [b"poison-2"]
    assert broker.requeue_dead_letters() == 0


def test_requeued_dead_letters_keep_the_priority_they_were_sent_with(broker: Broker) -> None:
    from celeriac import protocol

    def message(name: str, priority: int) -> bytes:
        return protocol.pack(protocol.build_task_message(str(uuid.uuid4()), name, (), {}, priority=priority,
                                                         queue="q"))

    sent = {"low": 1, "high": 8, "none": 0}
    for name, priority in sent.items():
        pub(broker, "q", message(name, priority), priority=priority)
    pub(broker, "q", b"not a message at all")
    taken = fetch_all(broker, ["q"])
    broker.dead_letter([(d, "failed") for d in taken])
    high = next(dl for dl in broker.dead_letters() if b'"high"' in dl.payload)
    assert broker.requeue_dead_letters([high.id]) == 1  # one, by id
    assert broker.requeue_dead_letters() == 3  # the rest
    back = fetch_all(broker, ["q"])
    names = [protocol.unpack(d.payload).task_name if d.payload[:1] == b"[" else "garbage" for d in back]
    assert names == ["high", "low", "none", "garbage"]  # priority first (higher first), then as they came
    assert [d.priority for d in back] == [8, 1, 0, 0]


def test_dead_letter_keeps_the_delivery_count(broker: Broker) -> None:
    pub(broker, "q", b"p")
    broker.heartbeat("w1", ttl=60)
    for _ in range(3):
        [d] = fetch_all(broker, ["q"])
        broker.requeue_owner("w1-0", d.tag)  # it was running when its process died
    [d] = fetch_all(broker, ["q"])
    assert d.deliveries == 4
    broker.dead_letter([(d, "poison")])
    assert broker.dead_letters()[0].deliveries == 4


# --- purge and sizes ---

def test_purge_counts_ready_and_delayed_of_the_named_queues(broker: Broker) -> None:
    pub(broker, "q1", b"r1", b"r2", b"r3")
    pub(broker, "q1", b"d1", b"d2", eta=time.time() + 60)
    pub(broker, "q1", b"leased", priority=9)
    pub(broker, "q2", b"keep")
    # Lease the last q1 message (its priority makes it first): a running task is not purged.
    [leased] = broker.fetch(["q1"], "w1", "w1-0", 1, timeout=0)
    assert leased.payload == b"leased"
    assert broker.purge(["q1"]) == 5
    assert sizes(broker, "q1") == {"ready": 0, "reserved": 1, "delayed": 0}
    assert sizes(broker, "q2") == {"ready": 1, "reserved": 0, "delayed": 0}
    assert broker.purge(["q1"]) == 0
    assert broker.purge(["q1", "q2"]) == 1
    assert broker.purge(["no-such-queue"]) == 0


def test_queue_sizes(broker: Broker) -> None:
    pub(broker, "a", b"1", b"2", b"3")
    pub(broker, "a", b"later", eta=time.time() + 60)
    pub(broker, "b", b"x")
    broker.fetch(["a"], "w1", "w1-0", 2, timeout=0)
    got = broker.queue_sizes(["a", "b", "empty"])
    assert got == {"a": {"ready": 1, "reserved": 2, "delayed": 1},
                   "b": {"ready": 1, "reserved": 0, "delayed": 0},
                   "empty": {"ready": 0, "reserved": 0, "delayed": 0}}
    everything = broker.queue_sizes()
    assert everything["a"] == got["a"] and everything["b"] == got["b"]


def _sent(task_id: str, at: float) -> bytes:
    from celeriac import protocol
    msg = protocol.build_task_message(task_id, "t", (), {})
    msg.headers[protocol.SENT_HEADER] = at
    return protocol.pack(msg)


def test_oldest_waiting_is_the_earliest_sent_ready_message_of_any_priority(broker: Broker) -> None:
    now = time.time()
    pub(broker, "a", _sent("leased", now - 100))  # taken by a worker below: no longer waiting
    broker.fetch(["a"], "w1", "w1-0", 1, timeout=0)
    pub(broker, "a", _sent("p0-old", now - 30), _sent("p0-new", now - 5))
    pub(broker, "a", _sent("p9-newer", now - 10), priority=9)  # fetched first, yet not the oldest
    pub(broker, "a", _sent("later", now - 300), eta=now + 60)  # delayed: not waiting yet
    pub(broker, "b", _sent("high", now - 7), priority=5)
    pub(broker, "b", b"not a celeriac message")  # no send time: left out, not an error
    got = broker.oldest_waiting(["a", "b", "empty"])
    assert got == {"a": pytest.approx(now - 30, abs=0.01), "b": pytest.approx(now - 7, abs=0.01)}


# --- blocking fetch ---

def test_fetch_timeout_returns_empty_after_about_the_timeout(broker: Broker) -> None:
    start = time.monotonic()
    assert broker.fetch(["q"], "w1", "w1-0", 10, timeout=0.3) == []
    elapsed = time.monotonic() - start
    assert 0.28 <= elapsed < 2.0, elapsed


def test_fetch_zero_timeout_does_not_block(broker: Broker) -> None:
    start = time.monotonic()
    assert broker.fetch(["q"], "w1", "w1-0", 10, timeout=0) == []
    assert time.monotonic() - start < 0.5


def test_fetch_returns_early_when_another_thread_publishes(url: str, broker: Broker) -> None:
    broker.fetch(["q"], "w1", "w1-0", 1, timeout=0)  # create tables / state up front
    publisher = create_broker(url)  # its own object, as another client would have
    errors: list[BaseException] = []

    def publish_later() -> None:
        try:
            time.sleep(0.2)
            publisher.publish([Outgoing("q", b"wake up")])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=publish_later)
    start = time.monotonic()
    thread.start()
    got = broker.fetch(["q"], "w1", "w1-0", 10, timeout=10)
    elapsed = time.monotonic() - start
    thread.join(5)
    assert not errors
    assert [d.payload for d in got] == [b"wake up"]
    assert 0.15 <= elapsed < 2.0, elapsed


def test_fetch_wakes_for_a_delayed_message_that_becomes_due(broker: Broker) -> None:
    due = time.time() + 0.25
    pub(broker, "q", b"soon", eta=due)
    start = time.monotonic()
    got = broker.fetch(["q"], "w1", "w1-0", 10, timeout=10)
    elapsed = time.monotonic() - start
    assert [d.payload for d in got] == [b"soon"]
    # Not early (measured from the ETA itself: on a busy machine the publish alone can take
    # tens of milliseconds; Redis keeps ETAs in whole milliseconds) and not much late.
    assert time.time() >= due - 0.002, due - time.time()
    assert elapsed < 2.0, elapsed


def test_empty_batches_are_no_ops(broker: Broker) -> None:
    pub(broker, "q", b"a")
    broker.publish([])
    broker.ack([])
    broker.release([])
    broker.dead_letter([])
    assert broker.fetch([], "w1", "w1-0", 10, timeout=0) == []
    assert broker.purge([]) == 0
    assert broker.queue_sizes([]) == {}
    assert broker.requeue_dead_letters([]) == 0
    assert sizes(broker, "q") == {"ready": 1, "reserved": 0, "delayed": 0}


# --- known defects ---

def test_stale_release_does_not_unlease_the_new_owner(broker: Broker) -> None:
    broker.heartbeat("paused", ttl=0.1)
    broker.heartbeat("live", ttl=60)
    pub(broker, "q", b"m")
    [stale] = broker.fetch(["q"], "paused", "paused-0", 1, timeout=0)
    wait_until(lambda: "paused" not in broker.live_workers(), message="the lease of 'paused' to expire")
    assert broker.recover() == 1
    [current] = broker.fetch(["q"], "live", "live-0", 1, timeout=0)
    assert current.deliveries == 2
    # The paused worker wakes up and, shutting down, gives back its "unstarted" prefetch.
    broker.release([stale])
    assert sizes(broker, "q") == {"ready": 0, "reserved": 1, "delayed": 0}
    assert broker.fetch(["q"], "third", "third-0", 1, timeout=0) == []


def test_claim_at_commit_leases_with_the_batch_or_not_at_all(broker: Broker) -> None:
    """A claim made with a batch's writes (broker.claim_at_commit) is a fetch: the messages are
    leased to the owner when the transaction commits, and stay claimable if it rolls back."""
    pub(broker, "q", b"a", b"b", b"c")
    first = broker.fetch(["q"], "w1", "w1/a", 1, timeout=0)
    assert [d.payload for d in first] == [b"a"]
    with broker.transaction():
        broker.ack(first)
        claim = broker.claim_at_commit(["q"], "w1", "w1/a", 1)
    if claim is None:
        pytest.skip(f"{type(broker).__name__} claims only through fetch()")
    got = claim()
    assert [(d.payload, d.owner, d.deliveries) for d in got] == [(b"b", "w1/a", 1)]
    assert broker.queue_sizes(["q"])["q"]["reserved"] == 1  # leased, and the ack landed
    assert broker.requeue_owner("w1/a", None) == 1  # ... to that owner

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with broker.transaction():
            again = broker.claim_at_commit(["q"], "w1", "w1/a", 5)
            assert again is not None
            raise Boom()
    assert broker.queue_sizes(["q"])["q"] == {"ready": 2, "reserved": 0, "delayed": 0}
    assert [d.payload for d in broker.fetch(["q"], "w2", "w2/a", 5, timeout=0)] == [b"b", b"c"]


def test_claim_at_commit_outside_a_transaction_is_declined(broker: Broker) -> None:
    pub(broker, "q", b"a")
    assert broker.claim_at_commit(["q"], "w1", "w1/a", 1) is None
    assert broker.queue_sizes(["q"])["q"]["ready"] == 1


def test_claim_now_leases_at_once_or_declines(broker: Broker) -> None:
    """broker.claim_now is a fetch that never waits (a busy slot's next batch), and is declined
    inside a transaction, where the claim would wait for that transaction's commit."""
    pub(broker, "q", b"a", b"b", b"c")
    got = broker.claim_now(["q"], "w1", "w1/a", 2)
    if got is None:
        pytest.skip(f"{type(broker).__name__} claims only through fetch()")
    assert [(d.payload, d.owner, d.deliveries) for d in got] == [(b"a", "w1/a", 1), (b"b", "w1/a", 1)]
    assert broker.queue_sizes(["q"])["q"] == {"ready": 1, "reserved": 2, "delayed": 0}
    with broker.transaction():
        assert broker.claim_now(["q"], "w1", "w1/a", 2) is None
    started = time.monotonic()
    assert [d.payload for d in broker.claim_now(["q"], "w1", "w1/a", 2) or []] == [b"c"]
    assert broker.claim_now(["q"], "w1", "w1/a", 2) == []  # an empty queue answers at once
    assert time.monotonic() - started < 1.0
    assert broker.requeue_owner("w1/a", None) == 3  # ... all leased to that owner
