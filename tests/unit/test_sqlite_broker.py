"""What only the SQLite broker must show: one file, many clients claiming at once, durability."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from celeriac.brokers import Outgoing, create_broker
from celeriac.transports.sqlite.broker import SQLiteBroker

TOTAL = 500


def _claim_until_empty(url: str, worker: str, limit: int, barrier: Any) -> list[tuple[str, bytes, int]]:
    broker = SQLiteBroker(url)  # every claimer has its own broker object (and connection)
    barrier.wait(10)
    got: list[tuple[str, bytes, int]] = []
    empty_rounds = 0
    while empty_rounds < 3:
        batch = broker.fetch(["q"], worker, f"{worker}-0", limit, timeout=0)
        if not batch:
            empty_rounds += 1
            continue
        empty_rounds = 0
        got.extend((d.tag, d.payload, d.deliveries) for d in batch)
        broker.ack(batch)
        time.sleep(0.0005)  # "run" the tasks, as a worker would, so that claimers interleave
    return got


def _check_exact(claims: list[list[tuple[str, bytes, int]]]) -> None:
    payloads = [p for claim in claims for _tag, p, _n in claim]
    tags = [t for claim in claims for t, _p, _n in claim]
    assert len(payloads) == TOTAL, f"claimed {len(payloads)} of {TOTAL}"
    assert len(set(payloads)) == TOTAL, "a message was handed to two claimers"
    assert len(set(tags)) == TOTAL
    assert set(payloads) == {f"m{i}".encode() for i in range(TOTAL)}
    assert all(n == 1 for claim in claims for _t, _p, n in claim)
    assert sum(1 for claim in claims if claim) >= 2, "only one claimer ever got work: not concurrent"


def test_threads_with_separate_brokers_never_claim_the_same_message(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    create_broker(url).publish([Outgoing("q", f"m{i}".encode()) for i in range(TOTAL)])
    barrier = threading.Barrier(4)
    results: dict[int, list[tuple[str, bytes, int]]] = {}
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            results[n] = _claim_until_empty(url, f"t{n}", 3 + n, barrier)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(results) == 4
    _check_exact(list(results.values()))
    sizes = create_broker(url).queue_sizes(["q"])["q"]
    assert sizes == {"ready": 0, "reserved": 0, "delayed": 0}


def test_threads_claim_while_others_publish(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    SQLiteBroker(url).queue_sizes()  # create the schema before the race
    barrier = threading.Barrier(5)
    results: dict[int, list[tuple[str, bytes, int]]] = {}
    errors: list[BaseException] = []
    published = threading.Event()

    def publisher() -> None:
        try:
            broker = SQLiteBroker(url)
            barrier.wait(10)
            for start in range(0, TOTAL, 25):
                broker.publish([Outgoing("q", f"m{i}".encode()) for i in range(start, start + 25)])
            published.set()
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    def claimer(n: int) -> None:
        try:
            broker = SQLiteBroker(url)
            barrier.wait(10)
            got: list[tuple[str, bytes, int]] = []
            while True:
                batch = broker.fetch(["q"], f"t{n}", f"t{n}-0", 5, timeout=0.05)
                got.extend((d.tag, d.payload, d.deliveries) for d in batch)
                broker.ack(batch)
                if not batch and published.is_set():
                    break
            results[n] = got
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=publisher)] + [threading.Thread(target=claimer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    payloads = [p for got in results.values() for _t, p, _n in got]
    assert sorted(payloads) == sorted(f"m{i}".encode() for i in range(TOTAL))


def _process_claimer(url: str, worker: str, barrier: Any, out: Any) -> None:
    try:
        out.put(("ok", _claim_until_empty(url, worker, 4, barrier)))
    except BaseException as exc:
        out.put(("error", repr(exc)))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_processes_never_claim_the_same_message(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    SQLiteBroker(url).publish([Outgoing("q", f"m{i}".encode()) for i in range(TOTAL)])
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(3)
    out = ctx.Queue()
    procs = [ctx.Process(target=_process_claimer, args=(url, f"p{n}", barrier, out)) for n in range(3)]
    for p in procs:
        p.start()
    try:
        answers = [out.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():  # pragma: no cover
                p.kill()
    assert all(kind == "ok" for kind, _ in answers), answers
    _check_exact([claim for _, claim in answers])


def test_messages_survive_a_new_broker_object(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    url = f"sqlite:///{path}"
    first = SQLiteBroker(url)
    first.publish([Outgoing("q", b"ready"), Outgoing("q", b"later", 0, time.time() + 60)])
    first.heartbeat("w1", ttl=60)
    [leased] = first.fetch(["q"], "w1", "w1-0", 1, timeout=0)
    first.dead_letter([(leased, "poison")])
    first.publish([Outgoing("q", b"ready2")])
    first.close()
    assert path.exists()
    second = SQLiteBroker(url)
    assert second.queue_sizes(["q"])["q"] == {"ready": 1, "reserved": 0, "delayed": 1}
    assert [d.reason for d in second.dead_letters()] == ["poison"]
    assert "w1" in second.live_workers()


def test_relative_url_is_relative_to_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    broker = SQLiteBroker("sqlite:///rel.db")
    assert os.path.samefile(os.path.dirname(broker.path), tmp_path)
    assert os.path.basename(broker.path) == "rel.db"
    broker.publish([Outgoing("q", b"x")])
    assert (tmp_path / "rel.db").exists()


def test_absolute_url_with_four_slashes(tmp_path: Path) -> None:
    broker = SQLiteBroker(f"sqlite:////{str(tmp_path / 'abs.db').lstrip('/')}")
    assert broker.path == str(tmp_path / "abs.db")


def test_worker_info_round_trips_through_json(tmp_path: Path) -> None:
    broker = SQLiteBroker(f"sqlite:///{tmp_path / 'b.db'}")
    info = {"hostname": "celeriac@host", "pid": 123, "queues": ["a", "b"], "nested": {"x": 1.5}}
    broker.heartbeat("w1", ttl=60, info=info)
    assert broker.live_workers() == {"w1": info}
