"""One pool slot's path, step by step: each early ending and each run goes out through finish,
with exactly the writes it owes (result, dead letter, ack), on the memory broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from celeriac import Celeriac, states
from celeriac.brokers import Delivery, Outgoing
from celeriac.worker.batch import Batch
from celeriac.worker.checks import CHECKS, DECODE
from celeriac.worker.consumer import Consumer

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def app() -> Iterator[Celeriac]:
    name = uuid.uuid4().hex
    made = Celeriac("path", broker=f"memory://{name}", backend=f"memory://{name}", set_as_current=False,
                    task_max_deliveries=3)

    @made.task(name="path.add")
    def add(x: int, y: int) -> int:
        return x + y

    @made.task(name="path.boom")
    def boom() -> None:
        raise ValueError("boom")

    yield made
    made.close()


def _consumer(app: Celeriac) -> Consumer:
    return Consumer(app, worker_id="w", owner="w/0.0", queues=["celery"], prefetch=10, hostname="w@host")


def _deliver(app: Celeriac, consumer: Consumer, *, count: int = 1) -> list[Delivery]:
    deliveries = app.broker.fetch(["celery"], "w", "w/0.0", count, timeout=1.0)
    assert len(deliveries) == count
    consumer.handle_batch(deliveries)
    return deliveries


def _state(app: Celeriac, task_id: str) -> Any:
    meta = app.backend.get(task_id)
    return meta and meta.get("status")


def test_the_steps_run_in_the_documented_order() -> None:
    assert [s.__name__ for s in DECODE] == ["decode_message", "delivered_too_often", "find_task",
                                            "decode_arguments", "received"]
    assert [s.__name__ for s in CHECKS] == ["duplicate_chord_body", "revoked", "expired", "follows_pending_call",
                                            "over_rate_limit", "locked_out"]


def test_success_and_failure_are_stored_acked_and_counted(app: Celeriac) -> None:
    ok, bad = app.send_task("path.add", (2, 3)), app.send_task("path.boom")
    consumer = _consumer(app)
    _deliver(app, consumer, count=2)
    assert ok.get(timeout=5) == 5 and _state(app, bad.id) == states.FAILURE
    assert consumer.processed == 2 and consumer.totals == {"path.add": 1, "path.boom": 1}
    assert app.broker.queue_sizes(["celery"])["celery"]["ready"] == 0
    assert app.broker.requeue_owner("w/0.0", None) == 0  # both acked: nothing left leased


def test_an_undecodable_message_goes_to_the_dead_letters_and_is_not_counted(app: Celeriac) -> None:
    app.broker.publish([Outgoing("celery", b"\x00not a task message")])
    consumer = _consumer(app)
    _deliver(app, consumer)
    dead = app.broker.dead_letters()
    assert len(dead) == 1 and "cannot decode message" in dead[0].reason
    assert consumer.processed == 0


def test_an_unknown_task_fails_with_not_registered_and_is_acked(app: Celeriac) -> None:
    sent = app.send_task("path.nobody")
    consumer = _consumer(app)
    _deliver(app, consumer)
    assert _state(app, sent.id) == states.FAILURE
    assert app.broker.requeue_owner("w/0.0", None) == 0 and app.broker.dead_letters() == []
    assert consumer.processed == 0


def test_a_message_delivered_too_often_is_dead_lettered_with_worker_lost(app: Celeriac) -> None:
    sent = app.send_task("path.add", (1, 1))
    for _ in range(3):  # three deliveries that never finished (their pool process was killed)
        app.broker.fetch(["celery"], "w", "w/0.0", 1, timeout=1.0)
        app.broker.requeue_owner("w/0.0", None, True)
    consumer = _consumer(app)
    _deliver(app, consumer)
    assert _state(app, sent.id) == states.FAILURE
    assert "task_max_deliveries=3" in app.broker.dead_letters()[0].reason
    assert consumer.processed == 0


def test_revoked_and_expired_tasks_are_discarded_as_revoked(app: Celeriac) -> None:
    revoked = app.send_task("path.add", (1, 2))
    app.control.revoke(revoked.id)
    expired = app.send_task("path.add", (1, 2), expires=datetime.now(UTC) - timedelta(seconds=1))
    consumer = _consumer(app)
    _deliver(app, consumer, count=2)
    assert _state(app, revoked.id) == states.REVOKED and _state(app, expired.id) == states.REVOKED
    assert consumer.processed == 0
    assert app.broker.requeue_owner("w/0.0", None) == 0


def test_finish_is_the_one_exit(app: Celeriac, monkeypatch: pytest.MonkeyPatch) -> None:
    app.broker.publish([Outgoing("celery", b"garbage")])
    for args in [(1, 1), ()]:
        app.send_task("path.add" if args else "path.nobody", args)
    consumer = _consumer(app)
    seen: list[str] = []
    original = Consumer.finish

    def spy(self: Consumer, job: Any, ending: Any, batch: Batch) -> None:
        seen.append(type(ending).__name__)
        original(self, job, ending, batch)

    monkeypatch.setattr(Consumer, "finish", spy)
    _deliver(app, consumer, count=3)
    assert sorted(seen) == ["Ran", "Undecodable", "Unregistered"]


def test_a_busy_slot_writes_several_batches_in_one_commit_on_postgres(request: pytest.FixtureRequest,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the broker can claim at once (PostgreSQL's claim_now), a full batch finished within
    FLUSH_AFTER keeps its outcomes for the next commit and claims the next batch; the claim that
    finds nothing writes them all, before the slot waits."""
    from helpers import fresh_postgres_url

    from celeriac.worker import batch as batch_module
    from celeriac.worker.aio import AsyncRunner
    monkeypatch.setattr(batch_module, "FLUSH_AFTER", 60.0)  # "within FLUSH_AFTER", however slow the machine
    url = fresh_postgres_url(request)
    pg = Celeriac("carry", broker=url, backend=url, set_as_current=False)

    @pg.task(name="carry.add")
    def add(x: int, y: int) -> int:
        return x + y

    try:
        sent = [add.delay(i, i) for i in range(6)]
        runner = AsyncRunner(10)  # as every slot of a worker has (idle here: no async task)
        consumer = Consumer(pg, worker_id="w", owner="w/0.0", queues=["celery"], prefetch=2, hostname="w@host",
                            async_runner=runner)
        runner.bind(consumer)
        consumer.fetch_timeout = 0.05
        consumer.handle_batch(pg.broker.fetch(["celery"], "w", "w/0.0", 2, timeout=1.0))
        assert pg.backend.get(sent[0].id) is None  # finished, not written yet
        assert pg.broker.queue_sizes(["celery"])["celery"] == {"ready": 4, "reserved": 2, "delayed": 0}
        while deliveries := consumer._fetch():
            assert len(deliveries) == 2
            consumer.handle_batch(deliveries)
        assert [r.get(timeout=5) for r in sent] == [0, 2, 4, 6, 8, 10]
        assert pg.broker.queue_sizes(["celery"])["celery"] == {"ready": 0, "reserved": 0, "delayed": 0}
    finally:
        pg.close()
