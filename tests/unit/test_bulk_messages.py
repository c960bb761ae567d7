"""Big groups are built from one template (canvas/bulk.py, protocol.MessageTemplate): the
messages must be the very bytes the one-by-one path makes; and the pieces the fast publish
path uses (ids, the JSON encoder, kombu's envelope) must equal what they replace."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import time
import uuid
from typing import Any, Iterator

import pytest

from celeriac import Celeriac, chord, group, protocol, signals
from celeriac.brokers import Outgoing
from celeriac.exceptions import EncodeError

pytestmark = pytest.mark.timeout(60)

ETA = dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def still_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every message carries its send time: the two paths, run a moment apart, must agree on it."""
    monkeypatch.setattr(protocol.time, "time", lambda: 1_900_000_000.25)


@pytest.fixture
def app() -> Iterator[Celeriac]:
    app = Celeriac("bulk", broker="memory://bulk-messages", backend="memory://bulk-messages")
    app.conf.task_routes = {"bulk.routed": {"queue": "routed", "priority": 4}}

    @app.task(name="bulk.add")
    def add(x: int, y: int = 0) -> int:
        return x + y

    @app.task(name="bulk.routed", time_limit=30, expires=ETA)
    def routed(x: int) -> int:
        return x

    @app.task(name="bulk.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    yield app
    app.close()


def _one_by_one(build: Any) -> list[Outgoing]:
    """The messages with a before_task_publish receiver connected: the ordinary path, per member."""
    def receiver(**_kw: Any) -> None:
        pass
    signals.before_task_publish.connect(receiver)
    try:
        return list(build())
    finally:
        signals.before_task_publish.disconnect(receiver)


def _assert_same(bulk: list[Outgoing], ordinary: list[Outgoing]) -> None:
    assert len(bulk) == len(ordinary) > 1
    for fast, slow in zip(bulk, ordinary, strict=True):
        assert (fast.queue, fast.priority, fast.eta) == (slow.queue, slow.priority, slow.eta)
        assert fast.payload == slow.payload  # byte for byte: headers, properties, body
        assert fast.message is not None and protocol.pack(fast.message) == fast.payload
        if fast.message.headers_json is not None:  # the cached text is the headers' own JSON
            assert json.loads(fast.message.headers_json) == fast.message.headers


def _frozen(sig: Any) -> Any:
    sig.freeze()
    return sig


@pytest.mark.parametrize("options", [
    {},
    {"eta": ETA, "priority": 7, "queue": "other"},
    {"expires": ETA, "headers": {"tenant": "é%s\x00"}, "ignore_result": True, "time_limit": 5},
    {"argsrepr": "(hidden)"},
    {"root_id": "the-root", "parent_id": "the-parent", "shadow": "nickname"},
])
def test_a_group_built_from_a_template_is_the_same_bytes(app: Celeriac, options: dict[str, Any]) -> None:
    add = app.tasks["bulk.add"]
    g = _frozen(group([add.s(i, i) for i in range(5)] + [add.s(i, y=i) for i in range(3)]
                      + [add.si(9), app.tasks["bulk.routed"].s(1), add.s(2)]))
    bulk = g.messages(app, (), {}, dict(options))
    ordinary = _one_by_one(lambda: g.messages(app, (), {}, dict(options)))
    _assert_same(bulk, ordinary)
    assert [protocol.unpack(m.payload).headers["group_index"] for m in bulk] == list(range(11))


def test_partial_arguments_and_a_chord_header_too(app: Celeriac) -> None:
    add, tsum = app.tasks["bulk.add"], app.tasks["bulk.tsum"]
    c = _frozen(chord([add.s(i) for i in range(6)], tsum.s()))
    bulk = c.messages(app, (100,), {}, {})
    ordinary = _one_by_one(lambda: c.messages(app, (100,), {}, {}))
    _assert_same(bulk, ordinary)
    assert protocol.decode_body(protocol.unpack(bulk[3].payload), frozenset({protocol.JSON}))[0] == (100, 3)


def test_members_with_options_of_their_own_take_the_ordinary_path(app: Celeriac) -> None:
    add = app.tasks["bulk.add"]
    g = _frozen(group(add.s(1, 1), add.s(2, 2).set(priority=3), add.s(3, 3).on_error(add.si(0)), add.s(4, 4)))
    bulk = g.messages(app, (), {}, {})
    assert [m.priority for m in bulk] == [0, 3, 0, 0]
    assert protocol.decode_body(protocol.unpack(bulk[2].payload), frozenset({protocol.JSON}))[2]["errbacks"]
    _assert_same(bulk, _one_by_one(lambda: g.messages(app, (), {}, {})))


def test_a_group_sent_from_a_running_task_makes_each_member_its_child(app: Celeriac) -> None:
    from celeriac.task import Context, _current
    add = app.tasks["bulk.add"]
    request = Context(id="parent-1", root_id="root-1", called_directly=False)
    token = _current.set((add, request))
    try:
        msgs = _frozen(group(add.s(i, i) for i in range(3))).messages(app, (), {}, {})
    finally:
        _current.reset(token)
    headers = [protocol.unpack(m.payload).headers for m in msgs]
    assert {(h["parent_id"], h["root_id"]) for h in headers} == {("parent-1", "root-1")}
    assert [c[0][0] for c in request.children] == [h["id"] for h in headers]


def test_an_argument_json_cannot_encode_fails_the_whole_group(app: Celeriac) -> None:
    add = app.tasks["bulk.add"]
    with pytest.raises(EncodeError, match="json"):
        _frozen(group(add.s(1, 1), add.s(object(), 1))).messages(app, (), {}, {})


def test_kombu_envelope_from_the_cached_headers_text_is_the_same(app: Celeriac) -> None:
    add = app.tasks["bulk.add"]
    bulk = _frozen(group(add.s(i, i) for i in range(3))).messages(app, (), {}, {"headers": {"k": "ü"}})
    for m in bulk[1:]:
        assert m.message is not None and m.message.headers_json is not None
        from_text = protocol.kombu_envelope(m.message, "celery", 0, delivery_tag="tag")
        decoded = protocol.unpack(m.payload)
        assert from_text == protocol.kombu_envelope(decoded, "celery", 0, delivery_tag="tag")


def test_new_ids_are_time_ordered_version_7_uuids() -> None:
    before = time.time_ns() / 1e9  # (this module stills time.time for its messages)
    ids = protocol.new_ids(5000) + [protocol.new_id() for _ in range(100)]
    after = time.time_ns() / 1e9
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, text)
        made = int(text.replace("-", "")[:12], 16) / 1000  # the first 48 bits: Unix time in ms
        assert before - 0.002 <= made <= after + 0.002 + 5000 / 4096 / 1000
    # in the order they were made (a group's members, then one call after another): an
    # index on the id takes them at its end
    assert ids == sorted(ids)
assert protocol.new_ids(0) == []


def test_the_fast_json_text_is_the_encoders_text() -> None:
    values = [[(1, 2), {}, {"callbacks": None}], {"x": [1.5, float("nan"), "é\n\u2028\x00", True]},
              {1: 2, 2.5: 3, None: 4, False: 5}, [dt.datetime(2030, 1, 1, tzinfo=dt.UTC), uuid.UUID(int=7),
                                                 decimal.Decimal("1.10"), b"\x00\xff", frozenset({3})]]
    for value in values:
        assert protocol.json_text(value) == protocol._json_encoder.encode(value)
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(EncodeError):
        protocol.dumps(loop)
    with pytest.raises(EncodeError, match="not JSON serializable"):
        protocol.build_task_message("t", "n", (object(),), {})


def test_kombu_properties_text_is_the_encoders_text() -> None:
    for corr, reply_to, queue, priority in [("a\"é%s", None, "q%d", 3), ("id", "r\n", "celery", 0), (7, None, "q", 0)]:
        props = {"correlation_id": corr, "reply_to": reply_to, "delivery_mode": 2,
                 "delivery_info": {"exchange": "", "routing_key": queue}, "priority": priority,
                 "body_encoding": "base64", "delivery_tag": "tag"}
        assert protocol._kombu_properties_json(props) == protocol.json_text(props)


def test_a_big_group_pauses_the_garbage_collector_only_while_it_is_sent(app: Celeriac) -> None:
    import gc

    from celeriac.canvas import bulk
    add = app.tasks["bulk.add"]
    seen: list[bool] = []
    real = bulk.members_messages

    def spy(*a: Any, **kw: Any) -> Any:
        seen.append(gc.isenabled())
        return real(*a, **kw)

    bulk_module_members = "celeriac.canvas.workflows.members_messages"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bulk_module_members, spy)
        group(add.s(i, i) for i in range(bulk.GC_PAUSE_FROM)).apply_async()
        group(add.s(i, i) for i in range(3)).apply_async()
        gc.disable()
        try:
            group(add.s(i, i) for i in range(bulk.GC_PAUSE_FROM)).apply_async()
            assert not gc.isenabled()  # the caller's choice is kept
        finally:
            gc.enable()
    assert seen == [False, True, False] and gc.isenabled()
    app.control.purge()
