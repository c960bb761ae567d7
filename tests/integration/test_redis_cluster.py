"""The behavioural suite's core on a real Redis Cluster: three masters on loopback
(tests/servers.py), made once per session. docs/redis-topologies.md.

The guarantee tests themselves are the ones every broker runs (test_guarantees.py, the canvas
tests), collected here once more with the cluster as their broker and result store; the tests
written below are about what only a cluster has: queues in several hash slots.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac, group
from celeriac.brokers import Outgoing, create_broker
from celeriac.exceptions import OperationalError
from helpers import wait_until
from test_canvas import test_chain_group_chord_and_nesting, test_failing_chord_header  # noqa: F401
from test_guarantees import (  # noqa: F401
    test_cold_shutdown_gives_running_task_back, test_delayed_task_survives_worker_restart_and_runs_once,
    test_kill_9_pool_child_mid_run_loses_nothing, test_kill_9_worker_mid_run_loses_nothing,
    test_poison_message_goes_to_dead_letters_after_bounded_deliveries,
    test_two_workers_and_c2_share_one_file_without_duplicates)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def broker_kind() -> str:
    """Every test here, the imported ones too, runs with the cluster as broker and result store."""
    return "redis-cluster"


def _queues_in_different_slots(prefix: str = "celeriac") -> tuple[str, str]:
    from celeriac.transports.redis.keys import QueueKeys
    from celeriac.transports.redis.topology import slot_of
    first = "celery"
    # redis-cli gives each of three masters a third of the 16384 slots: this far apart, another master
    other = next(f"q{i}" for i in range(100)
                 if abs(slot_of(QueueKeys(prefix, f"q{i}").ready) - slot_of(QueueKeys(prefix, first).ready)) > 6000)
    return first, other


def test_the_cluster_really_spreads_the_keys(urls: tuple[str, str], redis_cluster: Any) -> None:
    """The premise of this file: two queues land on two different masters."""
    first, other = _queues_in_different_slots()
    broker = create_broker(urls[0])
    broker.publish([Outgoing(first, b"a"), Outgoing(other, b"b")])
    counts = [int(n.command("DBSIZE").split(b":")[1]) for n in redis_cluster.nodes]
    assert sum(1 for c in counts if c > 0) >= 2, counts
    got = broker.fetch([first, other], "w1", "w1-0", 10, timeout=0)
    assert sorted(d.payload for d in got) == [b"a", b"b"]
    broker.ack(got)


def test_a_worker_serves_queues_in_several_slots(tasks: Any, start_worker: Any, broker_kind: str) -> None:
    first, other = _queues_in_different_slots()
    start_worker("-c", "2", "-Q", f"{first},{other}")
    results = [tasks.add.apply_async((i, 1), queue=first if i % 2 else other) for i in range(40)]
    assert [r.get(timeout=30) for r in results] == [i + 1 for i in range(40)]


def test_group_results_across_slots_in_one_call(tasks: Any, start_worker: Any) -> None:
    """A group's results are in many hash slots: the store splits its reads by slot."""
    start_worker("-c", "2")
    result = group(tasks.add.s(i, i) for i in range(300)).apply_async()
    assert result.get(timeout=60) == [2 * i for i in range(300)]


def test_beat_claims_then_publishes_on_a_cluster(urls: tuple[str, str]) -> None:
    """A beat's schedule and the queues are in different slots: ticks are recorded as pending,
    published, then confirmed - and a leader that died in between leaves them to recover()."""
    from celeriac.brokers.base import Tick
    broker = create_broker(urls[0])
    published: list[Outgoing] = []
    store = broker.schedule_store("main", published.extend)
    assert store is not None
    token = store.lease("leader", 10)
    assert token is not None
    message = Outgoing("celery", b"tick-payload")
    assert store.fire("leader", token, [Tick("every", 100.0, message)]) == ["every"]
    assert [m.payload for m in published] == [b"tick-payload"]
    assert store.fire("leader", token, [Tick("every", 100.0, message)]) == []  # recorded: never twice
    assert store.recover() == 0  # nothing left pending


def test_unreachable_cluster_error_names_the_nodes_without_password() -> None:
    from servers import free_port
    port = free_port()
    with pytest.raises(OperationalError) as info:
        app = Celeriac("c", broker=f"redis+cluster://:pw-secret@127.0.0.1:{port}", set_as_current=False)
        app.broker.publish([Outgoing("celery", b"x")])
    text = str(info.value)
    assert f"127.0.0.1:{port}" in text and "pw-secret" not in text, text


def test_kill_9_mid_run_across_two_slots_loses_nothing(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    """kill -9 of a worker that holds messages of queues on two masters: both come back."""
    first, other = _queues_in_different_slots()
    trace = tmp_path / "trace"
    results = [tasks.work.apply_async((str(trace), i, 0.02), queue=first if i % 2 else other) for i in range(200)]
    worker = start_worker("-c", "2", "-Q", f"{first},{other}")
    wait_until(lambda: len(trace.read_text().split()) >= 40 if trace.exists() else False, 20, message="40 done")
    worker.kill(signal.SIGKILL)
    worker.proc.wait(10)
    assert len(trace.read_text().split()) < 200, "the kill came too late to test anything"
    started = time.monotonic()
    start_worker("-c", "2", "-Q", f"{first},{other}")
    assert [r.get(timeout=60) for r in results] == list(range(200))
    assert sorted(set(map(int, trace.read_text().split()))) == list(range(200))
    assert time.monotonic() - started < 60
