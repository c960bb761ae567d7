"""What only the in-process broker must show: `memory://name` shares state by name, and threads are safe."""

from __future__ import annotations

import threading
import uuid

from celeriac.brokers import Outgoing, create_broker
from celeriac.transports.memory.broker import MemoryBroker


def _name() -> str:
    return f"memory://mem-{uuid.uuid4().hex}"


def test_same_name_shares_queues() -> None:
    url = _name()
    a, b = MemoryBroker(url), create_broker(url)
    a.publish([Outgoing("q", b"x")])
    assert b.queue_sizes(["q"])["q"]["ready"] == 1
    [d] = b.fetch(["q"], "w", "w-0", 1, timeout=0)
    assert d.payload == b"x"
    assert a.queue_sizes(["q"])["q"] == {"ready": 0, "reserved": 1, "delayed": 0}


def test_different_names_are_isolated() -> None:
    a, b = MemoryBroker(_name()), MemoryBroker(_name())
    a.publish([Outgoing("q", b"x")])
    assert b.fetch(["q"], "w", "w-0", 1, timeout=0) == []
    assert b.queue_sizes(["q"])["q"]["ready"] == 0
    a.heartbeat("w1", ttl=60)
    assert b.live_workers() == {}


def test_threads_never_claim_the_same_message() -> None:
    url = _name()
    MemoryBroker(url).publish([Outgoing("q", f"m{i}".encode()) for i in range(500)])
    barrier = threading.Barrier(4)
    results: dict[int, list[bytes]] = {}

    def run(n: int) -> None:
        broker = MemoryBroker(url)
        barrier.wait(10)
        got: list[bytes] = []
        while batch := broker.fetch(["q"], f"t{n}", f"t{n}-0", 3, timeout=0):
            got.extend(d.payload for d in batch)
            broker.ack(batch)
        results[n] = got

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    payloads = [p for got in results.values() for p in got]
    assert len(payloads) == 500
    assert set(payloads) == {f"m{i}".encode() for i in range(500)}
