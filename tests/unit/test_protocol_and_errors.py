"""DESIGN.md section 5 without a worker: bad input gets a clear answer and nothing is lost.
Also the message protocol, serializers, exceptions in results and state precedence."""

from __future__ import annotations

import builtins
import pickle
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest

from celeriac import AsyncResult, Celeriac, states
from celeriac import exceptions as exc_module
from celeriac.brokers import Broker, Outgoing, create_broker, safe_url
from celeriac.backends import create_result_store
from celeriac.exceptions import (ContentDisallowed, DecodeError, EncodeError, ImproperlyConfigured,
                                 OperationalError, TimeoutError)
from celeriac.protocol import (JSON, PICKLE, accepted_types, build_task_message, decode_body, dumps,
                               exception_from_dict, exception_to_dict, loads, pack, unpack)


@pytest.fixture(autouse=True)
def _no_url_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELERIAC_BROKER_URL", raising=False)
    monkeypatch.delenv("CELERIAC_RESULT_BACKEND", raising=False)


@pytest.fixture
def app() -> Iterator[Celeriac]:
    name = f"errors-{uuid.uuid4().hex}"
    a = Celeriac("x", broker=f"memory://{name}", backend=f"memory://{name}")
    yield a
    a.close()


def total_waiting(app: Celeriac) -> int:
    return sum(s["ready"] + s["delayed"] + s["reserved"] for s in app.broker.queue_sizes().values())


# --- arguments that cannot be serialized ---

def test_unserializable_args_raise_encode_error_and_enqueue_nothing(app: Celeriac) -> None:
    @app.task
    def take(x: Any) -> None:
        return None

    take.delay(1)
    assert app.broker.queue_sizes(["celery"])["celery"]["ready"] == 1
    with pytest.raises(EncodeError) as info:
        take.delay(object())
    assert "object" in str(info.value)
    assert isinstance(info.value, ValueError)  # as kombu's EncodeError
    with pytest.raises(EncodeError):
        take.apply_async(kwargs={"x": threading.Lock()}, countdown=10)
    with pytest.raises(EncodeError):
        app.send_task("any.name", [lambda: None])
    assert app.broker.queue_sizes(["celery"])["celery"] == {"ready": 1, "reserved": 0, "delayed": 0}
    assert total_waiting(app) == 1


def test_json_extras_are_serialized(app: Celeriac) -> None:
    """The types kombu's json sends: they are not an EncodeError."""
    import datetime as dt
    import decimal

    @app.task
    def take(*args: Any) -> None:
        return None

    take.delay(dt.datetime(2024, 1, 2, 3, 4, 5), uuid.UUID(int=1), decimal.Decimal("1.5"), b"\x00\x01", {1, 2})
    [d] = app.broker.fetch(["celery"], "w", "w-0", 1, timeout=0)
    args, _kwargs, _embed = decode_body(unpack(d.payload), accepted_types(["json"]))
    assert args[0] == "2024-01-02T03:04:05" and args[1] == str(uuid.UUID(int=1)) and args[2] == "1.5"
    assert sorted(args[4]) == [1, 2]


def test_unknown_serializer_is_an_encode_error(app: Celeriac) -> None:
    @app.task
    def f() -> None:
        return None

    with pytest.raises(EncodeError, match="yaml"):
        f.apply_async(serializer="yaml")
    assert total_waiting(app) == 0


# --- bad URLs ---

def test_bad_broker_scheme_lists_the_supported_schemes() -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        create_broker("foo://localhost")
    message = str(info.value)
    assert "foo://localhost" in message
    for scheme in ("memory://", "sqlite://"):
        assert scheme in message


def test_bad_broker_scheme_on_the_app_at_first_use() -> None:
    a = Celeriac("x", broker="nosuch://host/0", backend="memory://x")

    @a.task
    def f() -> None:
        return None

    with pytest.raises(ImproperlyConfigured, match="sqlite://"):
        f.delay()


def test_bad_result_backend_scheme_lists_the_supported_schemes() -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        create_result_store("mongodb://user:hunter2@db/x")
    message = str(info.value)
    assert "memory://" in message and "sqlite://" in message
    assert "hunter2" not in message and "mongodb://user:**@db/x" in message


def test_bad_scheme_error_hides_the_password() -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        create_broker("foo://admin:s3cr3t-pw@broker.example:5672//")
    assert "s3cr3t-pw" not in str(info.value)
    assert "foo://admin:**@broker.example:5672//" in str(info.value)


@pytest.mark.parametrize(("url", "safe"), [
    ("amqp://guest:guest@localhost//", "amqp://guest:**@localhost//"),
    ("redis://:s3cret@localhost:6379/0", "redis://:**@localhost:6379/0"),
    ("rediss://user:p%40ss@host:6380/1?ssl_cert_reqs=none", "rediss://user:**@host:6380/1?ssl_cert_reqs=none"),
    ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ("amqp://guest@localhost//", "amqp://guest@localhost//"),
    ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ("", ""),
])
def test_safe_url(url: str, safe: str) -> None:
    assert safe_url(url) == safe


def test_broker_safe_url_property() -> None:
    broker = create_broker("memory://user:pw@name")
    assert broker.safe_url == "memory://user:**@name"
    assert "pw@" not in broker.safe_url


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///"])
def test_sqlite_url_without_a_file_name_is_improperly_configured(url: str) -> None:
    a = Celeriac("x", broker=url, backend="memory://nofile")
    with pytest.raises(ImproperlyConfigured, match="sqlite"):
        a.send_task("any.task")


# --- broker unreachable ---

def test_unreachable_sqlite_broker_is_an_operational_error_naming_the_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'b.db'}"
    a = Celeriac("x", broker=url, backend="memory://unreach")
    a.conf.task_publish_retry_policy = {"max_retries": 2, "interval_start": 0, "interval_step": 0.01,
                                        "interval_max": 0.01}

    @a.task
    def f() -> None:
        return None

    start = time.monotonic()
    with pytest.raises(OperationalError) as info:
        f.delay()
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert url in message
    assert "3 attempt" in message  # the first and max_retries more
    assert not (tmp_path / "no").exists()


def test_publish_without_retry_fails_after_one_attempt(tmp_path: Path) -> None:
    a = Celeriac("x", broker=f"sqlite:///{tmp_path / 'missing' / 'b.db'}", backend="memory://unreach2")
    a.conf.task_publish_retry = False
    with pytest.raises(OperationalError, match="1 attempt"):
        a.send_task("any.task")


class _DownBroker(Broker):
    """A broker whose server is gone: publish fails the way a network broker would."""

    schemes = ("down",)

    def __init__(self, url: str, options: Any = None) -> None:
        super().__init__(url, options)
        self.attempts = 0

    def publish(self, messages: Sequence[Outgoing]) -> None:
        self.attempts += 1
        raise OperationalError("connection refused")

    def fetch(self, *a: Any, **k: Any) -> Any:
        raise NotImplementedError

    ack = release = requeue_owner = dead_letter = heartbeat = unregister = fetch
    recover = purge = queue_sizes = dead_letters = requeue_dead_letters = live_workers = fetch


def test_publish_error_names_the_url_without_its_password() -> None:
    url = "down://admin:t0p-s3cret@broker.example:5672/vhost"
    a = Celeriac("x", broker=url, backend="memory://down")
    a.conf.task_publish_retry_policy = {"max_retries": 3, "interval_start": 0, "interval_step": 0, "interval_max": 0}
    broker = _DownBroker(a.broker_url)
    a._broker = broker
    with pytest.raises(OperationalError) as info:
        a.send_task("proj.add", [1, 2])
    message = str(info.value)
    assert broker.attempts == 4
    assert "t0p-s3cret" not in message
    assert "down://admin:**@broker.example:5672/vhost" in message
    assert "proj.add" in message and "connection refused" in message


# --- results that are not ready ---

def test_get_timeout_on_unknown_id_is_celeriac_timeout_error(app: Celeriac) -> None:
    result = AsyncResult(str(uuid.uuid4()), app=app)
    assert result.state == states.PENDING
    assert result.status == states.PENDING
    assert not result.ready() and result.result is None
    start = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        result.get(timeout=0.2)
    elapsed = time.monotonic() - start
    assert 0.18 <= elapsed < 2.0, elapsed
    assert isinstance(info.value, builtins.TimeoutError)
    assert isinstance(info.value, exc_module.CeleriacError)
    assert result.id in str(info.value)


def test_get_timeout_on_a_sqlite_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    a = Celeriac("x", broker=url, backend=url)
    result = a.AsyncResult("never-sent")
    assert result.state == states.PENDING
    with pytest.raises(builtins.TimeoutError):
        result.get(timeout=0.2)


def test_get_returns_early_when_the_result_arrives(app: Celeriac) -> None:
    task_id = str(uuid.uuid4())
    timer = threading.Timer(0.2, lambda: app.store_state(task_id, states.SUCCESS, 42))
    start = time.monotonic()
    timer.start()
    try:
        assert app.AsyncResult(task_id).get(timeout=10) == 42
    finally:
        timer.cancel()
    assert time.monotonic() - start < 5


def test_failure_result_reraises_the_tasks_exception_type(app: Celeriac) -> None:
    app.store_state("failed-1", states.FAILURE, KeyError("missing"), traceback="Traceback...")
    result = app.AsyncResult("failed-1")
    assert result.failed()
    with pytest.raises(KeyError, match="missing"):
        result.get(timeout=1)
    assert isinstance(result.get(timeout=1, propagate=False), KeyError)
    assert result.traceback == "Traceback..."


# --- the message protocol ---

def test_pack_unpack_round_trip() -> None:
    msg = build_task_message(
        "id-1", "proj.add", [1, "two"], {"three": 3.0, "nested": {"a": [None, True]}},
        eta="2030-01-01T00:00:00+00:00", expires="2030-01-02T00:00:00+00:00", retries=2, root_id="root",
        parent_id="parent", group_id="g", group_index=1, origin="1@host", timelimit=(5.0, 10.0),
        priority=4, queue="q", extra_headers={"custom": "header"})
    back = unpack(pack(msg))
    assert back.headers == msg.headers
    assert back.properties == msg.properties
    assert back.body == msg.body
    assert back.content_type == JSON
    assert (back.task_id, back.task_name) == ("id-1", "proj.add")
    h = back.headers
    assert (h["retries"], h["root_id"], h["parent_id"], h["group"], h["eta"]) == (
        2, "root", "parent", "g", "2030-01-01T00:00:00+00:00")
    assert h["timelimit"] == [5.0, 10.0] and h["custom"] == "header" and h["lang"] == "py"
    assert back.properties["delivery_info"]["routing_key"] == "q" and back.properties["priority"] == 4
    args, kwargs, embed = decode_body(back, accepted_types(["json"]))
    assert args == (1, "two") and kwargs == {"three": 3.0, "nested": {"a": [None, True]}}
    assert set(embed) >= {"callbacks", "errbacks", "chain", "chord"}


def test_root_id_defaults_to_the_task_id() -> None:
    msg = build_task_message("id-2", "t", (), {})
    assert msg.headers["root_id"] == "id-2" and msg.headers["parent_id"] is None


def test_body_with_newlines_and_binary_survives_pack() -> None:
    msg = build_task_message("id-3", "t", ["line1\nline2", "\x00"], {}, serializer="pickle")
    back = unpack(pack(msg))
    assert back.content_type == PICKLE and back.body == msg.body
    args, _, _ = decode_body(back, accepted_types(["json", "pickle"]))
    assert args == ("line1\nline2", "\x00")


@pytest.mark.parametrize("garbage", [
    b"", b"garbage", b"\xff\xfe\x00", b"{}\nbody", b'[[],{},"x","y"]\nbody',
    b'[{"task":"t"},{},"application/json","utf-8"]\n[]',  # no id
    b'[{"id":"1","task":"t"},{}]\n[]',  # too short
])
def test_unpack_of_garbage_is_decode_error(garbage: bytes) -> None:
    with pytest.raises(DecodeError):
        unpack(garbage)


def test_decode_body_of_a_bad_body_is_decode_error() -> None:
    msg = build_task_message("id", "t", (), {})
    msg.body = b'{"not": "a list"}'
    with pytest.raises(DecodeError):
        decode_body(msg, accepted_types(["json"]))
    msg.body = b"[1, 2"
    with pytest.raises(DecodeError):
        decode_body(msg, accepted_types(["json"]))
    msg.body = b'["args-not-a-list", {}, null]'
    with pytest.raises(DecodeError):
        decode_body(msg, accepted_types(["json"]))


def test_pickle_is_refused_unless_accepted(app: Celeriac) -> None:
    app.send_task("proj.pickled", [{1, 2}], serializer="pickle")
    [d] = app.broker.fetch(["celery"], "w", "w-0", 1, timeout=0)
    msg = unpack(d.payload)
    assert msg.content_type == PICKLE
    with pytest.raises(ContentDisallowed) as info:
        decode_body(msg, accepted_types(app.conf.accept_content))
    assert isinstance(info.value, DecodeError)
    assert "pickle" in str(info.value) or "python-serialize" in str(info.value)
    app.conf.accept_content = ["json", "pickle"]
    args, _, _ = decode_body(msg, accepted_types(app.conf.accept_content))
    assert args == ({1, 2},)


def test_loads_refuses_content_types_not_accepted() -> None:
    _ctype, data = dumps({"a": 1}, "pickle")
    with pytest.raises(ContentDisallowed):
        loads(data, PICKLE, accepted_types(["json"]))
    assert loads(data, PICKLE, accepted_types(["pickle"])) == {"a": 1}
    with pytest.raises(ContentDisallowed):
        loads(b"{}", "application/x-yaml", accepted_types(["json"]))


def test_result_store_refuses_pickled_results_unless_accepted(tmp_path: Path) -> None:
    url = f"memory://results-{uuid.uuid4().hex}"
    writer = create_result_store(url, serializer="pickle", accept=["pickle"])
    writer.store([writer.encode({"task_id": "r1", "status": states.SUCCESS, "result": {1, 2}})])
    assert writer.get("r1")["result"] == {1, 2}  # type: ignore[index]
    reader = create_result_store(url, serializer="json", accept=["json"])
    with pytest.raises(ContentDisallowed):
        reader.get("r1")


def test_pickle_never_runs_when_refused() -> None:
    ran: list[int] = []

    class Evil:
        def __reduce__(self) -> Any:
            return (ran.append, (1,))

    data = pickle.dumps(Evil())
    with pytest.raises(ContentDisallowed):
        loads(data, PICKLE, accepted_types(["json"]))
    assert ran == []


# --- exceptions in results ---

class ModuleLevelError(Exception):
    pass


class Outer:
    class NestedError(ValueError):
        pass


class TwoArgError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(code, detail)
        self.code, self.detail = code, detail


@pytest.mark.parametrize("error", [
    ValueError("bad value"), KeyError("k"), ZeroDivisionError("division by zero"), OSError(2, "No such file"),
    builtins.TimeoutError("slow"), RuntimeError(), exc_module.SoftTimeLimitExceeded("soft"),
])
def test_exception_round_trip_for_builtins_and_celeriac(error: BaseException) -> None:
    data = exception_to_dict(error)
    assert data["exc_type"] == type(error).__qualname__
    back = exception_from_dict(data)
    assert type(back) is type(error)
    assert back.args == error.args and str(back) == str(error)


def test_exception_round_trip_for_classes_of_this_module() -> None:
    for error in (ModuleLevelError("mine", 1), Outer.NestedError("nested"), TwoArgError(7, "seven")):
        data = exception_to_dict(error)
        assert data["exc_module"] == __name__
        back = exception_from_dict(data)
        assert type(back) is type(error)
        assert back.args == error.args
    assert exception_from_dict(exception_to_dict(TwoArgError(7, "seven"))).code == 7  # type: ignore[attr-defined]


def test_exception_with_unserializable_args_keeps_its_text() -> None:
    error = ValueError(object())
    data = exception_to_dict(error)
    back = exception_from_dict(data)
    assert type(back) is ValueError
    assert str(back) == str(error)


def test_unknown_exception_module_gives_a_stand_in_with_the_same_name() -> None:
    data = {"exc_type": "PaymentDeclined", "exc_module": "shop.billing.errors", "exc_message": ["card expired"]}
    back = exception_from_dict(data)
    assert type(back).__name__ == "PaymentDeclined"
    assert type(back).__module__ == "shop.billing.errors"
    assert isinstance(back, Exception)
    assert str(back) == "card expired"
    assert type(exception_from_dict(data)) is type(back)  # one stand-in class per name
    assert "shop.billing.errors" not in __import__("sys").modules  # nothing was imported


def test_exception_from_dict_does_not_use_non_exception_attributes() -> None:
    back = exception_from_dict({"exc_type": "system", "exc_module": "os", "exc_message": ["echo hi"]})
    assert type(back).__name__ == "system" and isinstance(back, Exception)
    assert str(back) == "echo hi"


class FormattedError(Exception):
    """Its __init__ does not take its own args back: rebuilt without calling it."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}-{b}")


def test_exception_class_whose_constructor_differs_still_rebuilds() -> None:
    back = exception_from_dict(exception_to_dict(FormattedError(1, 2)))
    assert type(back) is FormattedError and back.args == ("1-2",)
    assert str(back) == "1-2"


class FormattedBase(BaseException):
    """A BaseException (not Exception) subclass whose __init__ does not take its own args back."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}-{b}")


def test_base_exception_subclass_whose_constructor_differs_still_rebuilds() -> None:
    back = exception_from_dict(exception_to_dict(FormattedBase(1, 2)))
    assert type(back) is FormattedBase and back.args == ("1-2",)


def test_exception_from_dict_of_other_values() -> None:
    err = ValueError("x")
    assert exception_from_dict(err) is err
    assert str(exception_from_dict("just text")) == "just text"


# --- states ---

def test_state_precedence_follows_celery() -> None:
    order = [states.SUCCESS, states.FAILURE, "PROGRESS", states.REVOKED, states.STARTED, states.RECEIVED,
             states.REJECTED, states.RETRY, states.PENDING]
    ranks = [states.precedence(s) for s in order]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    assert states.precedence("ANY_CUSTOM") == states.precedence("PROGRESS") == states.precedence(None)


def test_state_sets() -> None:
    assert states.READY_STATES == {states.SUCCESS, states.FAILURE, states.REVOKED}
    assert states.PROPAGATE_STATES == {states.FAILURE, states.REVOKED}
    assert states.EXCEPTION_STATES == {states.RETRY, states.FAILURE, states.REVOKED}
    assert states.PENDING in states.UNREADY_STATES and states.SUCCESS not in states.UNREADY_STATES
