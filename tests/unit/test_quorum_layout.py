"""How celeriac lays out RabbitMQ quorum queues (transports/amqp/wire.py), without a server;
tests/integration/test_rabbitmq_quorum.py runs them on a real 3-node cluster."""

from __future__ import annotations

import time

import pytest

from celeriac import Celeriac, protocol
from celeriac.brokers import Outgoing
from celeriac.transports.amqp.wire import SharedQueues, route_plan
from celeriac.exceptions import ImproperlyConfigured

QUORUM = {"x-queue-type": "quorum", "x-delivery-limit": 5, "x-dead-letter-exchange": "",
          "x-dead-letter-routing-key": "celeriac.dead", "x-dead-letter-strategy": "at-least-once",
          "x-overflow": "reject-publish"}


def test_default_quorum_declares_every_queue_as_quorum_with_a_delivery_limit() -> None:
    wire = SharedQueues({"queue_type": "quorum", "max_deliveries": 5})
    assert wire.declaration("celery").arguments == QUORUM
    assert wire.declaration("celeriac.priority.celery").arguments == QUORUM
    assert wire.declaration("celeriac.dead").arguments == {"x-queue-type": "quorum"}  # no limit, no cycle
    no_limit = SharedQueues({"queue_type": "quorum", "max_deliveries": 0})
    assert no_limit.declaration("celery").arguments == {"x-queue-type": "quorum"}


def test_two_priority_levels_high_is_5_to_9() -> None:
    wire = SharedQueues({"queue_type": "quorum"})
    assert [wire.target("q", p) for p in range(10)] == ["q"] * 5 + ["celeriac.priority.q"] * 5
    assert wire.consumed(["q", "r"]) == ["celeriac.priority.q", "celeriac.priority.r", "q", "r"]
    assert wire.logical("celeriac.priority.q") == "q"


def test_classic_stays_as_it_was() -> None:
    wire = SharedQueues({})
    assert wire.declaration("celery").arguments == {"x-max-priority": 9}
    assert wire.target("celery", 9) == "celery" and wire.consumed(["celery"]) == ["celery"]
    assert not wire.quorum("celery")


def test_per_queue_type_as_celery_users_write_it() -> None:
    kombu = pytest.importorskip("kombu")
    wire = SharedQueues({"task_queues": [kombu.Queue("payments", queue_arguments={"x-queue-type": "quorum"}),
                                         kombu.Queue("reports")]})
    assert wire.quorum("payments") and wire.quorum("celeriac.priority.payments")
    assert not wire.quorum("reports") and not wire.quorum("celery") and not wire.quorum("celeriac.dead")
    as_dicts = SharedQueues({"task_queues": [{"name": "payments", "queue_arguments": {"x-queue-type": "quorum"}}]})
    as_mapping = SharedQueues({"task_queues": {"payments": {"queue_arguments": {"x-queue-type": "quorum"}}}})
    assert as_dicts.quorum("payments") and as_mapping.quorum("payments")
    # and a queue made classic while the default is quorum
    mixed = SharedQueues({"queue_type": "quorum", "task_queues": [
        {"name": "legacy", "queue_arguments": {"x-queue-type": "classic"}}]})
    assert mixed.quorum("celery") and not mixed.quorum("legacy")


def test_an_unknown_queue_type_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match="'stream'"):
        SharedQueues({"queue_type": "stream"})


def test_shared_quorum_queue_is_declared_as_celery_declares_it() -> None:
    wire = SharedQueues({"queue_type": "quorum", "max_deliveries": 5, "celery_wire_queues": ["celery"]})
    declaration = wire.declaration("celery")
    assert (declaration.kind, declaration.arguments) == ("shared_queue", {"x-queue-type": "quorum"})
    assert wire.declaration("celeriac.priority.celery").arguments == QUORUM  # only celeriac reads it
    assert wire.target("celery", 7) == "celeriac.priority.celery" and wire.target("celery", 4) == "celery"


def test_delayed_messages_for_quorum_queues_use_quorum_delay_levels() -> None:
    wire = SharedQueues({"queue_type": "quorum", "max_deliveries": 5})
    payload = protocol.pack(protocol.build_task_message("t", "x", (), {}))
    needed, exchange, key = route_plan(Outgoing("q", payload, 0, time.time() + 60), shared=wire)
    assert exchange == "celeriac.qdelay.31" and key.endswith(".q")
    levels = [d for d in needed if d.kind == "queue" and d.name.startswith("celeriac.qdelay.")]
    assert len(levels) == 32
    assert all(d.arguments and d.arguments["x-queue-type"] == "quorum"
               and d.arguments["x-dead-letter-strategy"] == "at-least-once" for d in levels)
    assert needed[0].name == "celeriac.dead"  # where the queue's poison messages go exists first
    classic_needed, classic_exchange, _ = route_plan(Outgoing("q", payload, 0, time.time() + 60),
                                                     shared=SharedQueues({}))
    assert classic_exchange == "celeriac.delay.31"
    assert not any(d.name.startswith("celeriac.qdelay.") for d in classic_needed)


def test_the_app_passes_its_settings_to_the_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pika")
    app = Celeriac("q", broker="amqp://guest@127.0.0.1:1//;amqp://guest@127.0.0.1:2//")
    app.conf.task_default_queue_type = "quorum"
    app.conf.task_max_deliveries = 4
    broker = app.broker
    assert broker.wire.quorum("celery") and broker.wire.delivery_limit == 4  # type: ignore[attr-defined]
    assert [p.port for p in broker.endpoints] == [1, 2]  # type: ignore[attr-defined]
    broker.close()
