"""Plain calls (`add.delay(2, 2)`) are made from a template of the task's previous plain call
(app/plain.py): the message must be the very bytes `prepare_task` makes for the same call,
and whatever decides a message (settings, task attributes, routes, signals, a running task)
must still decide it at the next call."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from celeriac import Celeriac, protocol, signals
from celeriac.brokers import Outgoing
from celeriac.exceptions import EncodeError

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def still_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every message carries its send time: both paths must see the same one."""
    monkeypatch.setattr(protocol.time, "time", lambda: 1_900_000_000.25)


@pytest.fixture(autouse=True)
def no_receivers_left(monkeypatch: pytest.MonkeyPatch) -> None:
    """Receivers another test in this process left connected (tracing's, say) would rightly send
    every call the whole way: each test here starts with none, and connects its own."""
    for signal in (signals.before_task_publish, signals.after_task_publish):
        monkeypatch.setattr(signal, "_receivers", [])


@pytest.fixture
def app() -> Iterator[Celeriac]:
    app = Celeriac("plain", broker="memory://plain-calls", backend="memory://plain-calls")

    @app.task(name="plain.add")
    def add(x: Any, y: Any = 0) -> Any:
        return x + y

    yield app
    app.control.purge()
    app.close()


@pytest.fixture
def sent(app: Celeriac, monkeypatch: pytest.MonkeyPatch) -> list[Outgoing]:
    """What reaches the broker, in order."""
    seen: list[Outgoing] = []
    broker = app.broker
    real = broker.publish

    def publish(messages: Any) -> None:
        seen.extend(messages)
        real(messages)
    monkeypatch.setattr(broker, "publish", publish)
    return seen


@pytest.fixture
def full_builds(app: Celeriac, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The calls that went the whole way through prepare_task."""
    names: list[str] = []
    real = app.prepare_task

    def spy(name: str, *a: Any, **kw: Any) -> Any:
        names.append(name)
        return real(name, *a, **kw)
    monkeypatch.setattr(app, "prepare_task", spy)
    return names


def _as_prepare_task_makes(app: Celeriac, m: Outgoing, args: Any, kwargs: Any) -> None:
    assert m.message is not None
    name = m.message.headers["task"]
    expected, msg = app.prepare_task(name, args, kwargs, task_id=m.message.task_id, _task=app.tasks[name])
    assert (m.queue, m.priority, m.eta) == (expected.queue, expected.priority, expected.eta)
    assert m.payload == expected.payload  # byte for byte: headers, properties, body
    assert protocol.pack(m.message) == m.payload  # the message object says what the bytes say
    assert m.message.headers_json == msg.headers_json


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((1, 2), {}),
    ((3,), {"y": 4}),
    (("é%s\x00\"", ["nested", {"k": None}]), {}),
    (("x" * 3000,), {"y": "long repr, cut at 1024"}),
    ((), {}),
]


def test_each_plain_call_is_the_bytes_prepare_task_makes(app: Celeriac, sent: list[Outgoing],
                                                         full_builds: list[str]) -> None:
    add = app.tasks["plain.add"]
    results = [add.delay(*args, **kwargs) for args, kwargs in CALLS]
    assert full_builds == ["plain.add"]  # the first call made the template; the others used it
    assert [r.id for r in results] == [m.message.task_id for m in sent if m.message]
    assert len({r.id for r in results}) == len(CALLS)
    for m, (args, kwargs) in zip(sent, CALLS, strict=True):
        _as_prepare_task_makes(app, m, args, kwargs)


def test_settings_and_task_attributes_changed_between_calls_take_effect(app: Celeriac,
                                                                       sent: list[Outgoing]) -> None:
    add = app.tasks["plain.add"]

    def call(x: int) -> Any:
        result = add.delay(x, x)
        _as_prepare_task_makes(app, sent[-1], (x, x), {})  # under the settings of the moment
        return result
    call(1)
    call(2)
    app.conf.task_default_queue = "elsewhere"  # one change at a time: each must count on its own
    call(3)
    app.conf.task_default_priority = 6
    call(4)
    app.conf.task_ignore_result = True
    ignored = call(5)
    add.time_limit = 40
    call(6)
    add.soft_time_limit = 30
    call(7)
    add.queue = "its-own"
    call(8)
    add.priority = 2
    call(9)
    assert [m.queue for m in sent] == ["celery"] * 2 + ["elsewhere"] * 5 + ["its-own"] * 2
    assert [m.priority for m in sent] == [0, 0, 0] + [6] * 5 + [2]
    headers = [m.message.headers for m in sent if m.message]
    assert [h["ignore_result"] for h in headers] == [False] * 4 + [True] * 5
    assert ignored.ignored
    assert [h["timelimit"] for h in headers] == [[None, None]] * 5 + [[40, None]] + [[40, 30]] * 3


def test_what_a_template_cannot_know_goes_the_whole_way(app: Celeriac, sent: list[Outgoing],
                                                        full_builds: list[str]) -> None:
    add = app.tasks["plain.add"]
    add.delay(0, 0)  # a template exists from here on
    app.conf.task_routes = {"plain.add": {"queue": "routed"}}
    add.delay(1, 1)
    app.conf.task_routes = None
    seen_by_receiver: list[str] = []

    def receiver(headers: dict[str, Any], **_kw: Any) -> None:
        headers["added-by-receiver"] = "yes"
        seen_by_receiver.append(headers["id"])
    signals.before_task_publish.connect(receiver)
    try:
        during_signal = add.delay(2, 2)
    finally:
        signals.before_task_publish.disconnect(receiver)
    add.expires = 60
    add.delay(3, 3)
    add.expires = None
    assert full_builds == ["plain.add"] * 4
    assert sent[1].queue == "routed"
    assert seen_by_receiver == [during_signal.id]
    assert sent[2].message is not None and sent[2].message.headers["added-by-receiver"] == "yes"
    assert sent[3].message is not None and sent[3].message.headers["expires"]
    add.delay(4, 4)
    assert len(full_builds) == 4 and sent[4].message is not None
    assert "added-by-receiver" not in sent[4].message.headers and sent[4].message.headers["expires"] is None


def test_a_call_from_a_running_task_is_its_child(app: Celeriac, sent: list[Outgoing]) -> None:
    from celeriac.task import Context, _current
    add = app.tasks["plain.add"]
    add.delay(0, 0)
    request = Context(id="parent-1", root_id="root-1", called_directly=False)
    token = _current.set((add, request))
    try:
        child = add.delay(1, 1)
    finally:
        _current.reset(token)
    assert sent[1].message is not None
    assert (sent[1].message.headers["parent_id"], sent[1].message.headers["root_id"]) == ("parent-1", "root-1")
    assert request.children == [[[child.id, None], None]]
    add.delay(2, 2)
    assert sent[2].message is not None and sent[2].message.headers["parent_id"] is None


def test_arguments_json_cannot_encode_send_nothing(app: Celeriac, sent: list[Outgoing]) -> None:
    add = app.tasks["plain.add"]
    add.delay(1, 1)
    with pytest.raises(EncodeError, match="json"):
        add.delay(object(), 1)
    assert len(sent) == 1


def test_a_pickle_task_is_built_whole_each_time(app: Celeriac, sent: list[Outgoing],
                                                full_builds: list[str]) -> None:
    add = app.tasks["plain.add"]
    add.serializer = "pickle"
    add.delay({1, 2}, 0)
    add.delay({3}, 0)
    assert full_builds == ["plain.add", "plain.add"]
    assert all(m.message is not None and m.message.content_type == "application/x-python-serialize" for m in sent)
