"""The pieces of Celery's wire layout that need no server (tests/integration/test_celery_wire.py
runs them against real Celery)."""

from __future__ import annotations

import base64
import json

import pytest

from celeriac import Celeriac, protocol
from celeriac.transports.amqp.wire import SharedQueues, eta_of
from celeriac.exceptions import DecodeError
from celeriac.result import AsyncResult, GroupResult, child_entry, result_from_child

# A message as Celery 5.7's client LPUSHes it onto kombu's list (trimmed of nothing).
CELERY_ENVELOPE = {
    "body": base64.b64encode(b'[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]')
    .decode(),
    "content-encoding": "utf-8", "content-type": "application/json",
    "headers": {"lang": "py", "task": "tasks.add", "id": "3d7457df", "shadow": None, "eta": None, "expires": None,
                "group": None, "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": "3d7457df",
                "parent_id": None, "argsrepr": "(2, 3)", "kwargsrepr": "{}", "origin": "gen13060@vm",
                "ignore_result": None, "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {}},
    "properties": {"correlation_id": "3d7457df", "reply_to": "8d16c806", "delivery_mode": 2,
                   "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0,
                   "body_encoding": "base64", "delivery_tag": "d2cd00e5"},
}


def test_a_celery_envelope_unpacks_to_the_same_task() -> None:
    msg = protocol.unpack(json.dumps(CELERY_ENVELOPE).encode())
    assert (msg.task_name, msg.task_id, msg.content_type) == ("tasks.add", "3d7457df", protocol.JSON)
    args, kwargs, embed = protocol.decode_body(msg, frozenset({protocol.JSON}))
    assert (args, kwargs, embed["chain"]) == ((2, 3), {}, None)


def test_celeriac_message_round_trips_through_kombus_envelope() -> None:
    msg = protocol.build_task_message("t1", "tasks.mul", (6, 7), {"k": 1}, eta="2026-12-02T22:30:01.123456+00:00")
    envelope = json.loads(protocol.kombu_envelope(msg, "celery", 0))
    assert envelope["properties"]["body_encoding"] == "base64" and envelope["properties"]["delivery_tag"]
    assert envelope["properties"]["delivery_info"] == {"exchange": "", "routing_key": "celery"}
    back = protocol.unpack(json.dumps(envelope).encode())
    assert back.body == msg.body and back.headers == msg.headers


def test_a_broken_envelope_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="kombu"):
        protocol.unpack(b'{"body": "x", "headers": {"no": "task"}}')


def test_children_are_written_as_celerys_result_tuples_and_read_back() -> None:
    app = Celeriac("t", broker="memory://wire-layout")
    group = GroupResult("g1", [AsyncResult("a", app=app), AsyncResult("b", app=app)], app=app)
    assert child_entry(AsyncResult("x", app=app)) == [["x", None], None]
    assert child_entry(group) == [["g1", None], [[["a", None], None], [["b", None], None]]]
    back = result_from_child(json.loads(json.dumps(child_entry(group))), app)
    assert isinstance(back, GroupResult) and back.id == "g1" and [r.id for r in back.results] == ["a", "b"]
    assert result_from_child("old-style-id", app).id == "old-style-id"  # what older celeriac stored


def test_shared_rabbitmq_queue_keeps_priorities_beside_it() -> None:
    shared = SharedQueues({"celery_wire_queues": ["celery"]})
    assert shared.target("celery", 0) == "celery" and shared.target("celery", 7) == "celeriac.priority.celery"
    assert shared.target("other", 7) == "other"
    assert shared.logical("celeriac.priority.celery") == "celery"
    assert shared.consumed(["celery", "other"]) == ["celeriac.priority.celery", "celery", "other"]
    with_max = SharedQueues({"celery_wire_queues": ["celery"], "queue_max_priority": 10})
    assert with_max.target("celery", 7) == "celery" and with_max.consumed(["celery"]) == ["celery"]


def test_eta_header_as_celery_writes_it() -> None:
    assert eta_of({"eta": b"1970-01-01T00:00:10.500000+00:00"}) == 10.5
    assert eta_of({"eta": "not a date"}) is None and eta_of(None) is None


def test_delivery_tags_never_repeat() -> None:
    """kombu keys a Celery worker's unacknowledged messages by delivery tag: a tag shared by
    two messages would let one's acknowledgement drop the other's entry."""
    first, second = protocol.delivery_tags(10_000), protocol.delivery_tags(10_000)
    assert len(set(first) | set(second)) == 20_000
    assert all(isinstance(tag, str) and tag for tag in first)
