"""The app without a worker: eager execution, retries, handlers, signals, task creation,
configuration, environment overrides, default URLs and routing."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import types
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

import celeriac.app as app_module
from celeriac import Celeriac, Celery, EagerResult, Task, shared_task, signals, states
from celeriac.transports.memory.results import MemoryResultStore
from celeriac.transports.memory.broker import MemoryBroker
from celeriac.transports.sqlite.broker import SQLiteBroker
from celeriac.exceptions import MaxRetriesExceededError, NotRegistered, Retry
from celeriac.protocol import ExceptionInfo, unpack
from celeriac.task import AsyncTask


@pytest.fixture(autouse=True)
def _no_url_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment overrides the app's URLs: keep whatever the shell has out of these tests."""
    monkeypatch.delenv("CELERIAC_BROKER_URL", raising=False)
    monkeypatch.delenv("CELERIAC_RESULT_BACKEND", raising=False)


def memory_app(eager: bool = True, **settings: Any) -> Celeriac:
    name = f"app-{uuid.uuid4().hex}"
    app = Celeriac("x", broker=f"memory://{name}", backend=f"memory://{name}", **settings)
    app.conf.task_always_eager = eager
    return app


@pytest.fixture
def app() -> Iterator[Celeriac]:
    a = memory_app()
    yield a
    a.close()


@pytest.fixture
def lazy_app() -> Iterator[Celeriac]:
    """Not eager: calls go to the (memory) broker."""
    a = memory_app(eager=False)
    yield a
    a.close()


def queued(app: Celeriac) -> dict[str, int]:
    """Ready + delayed messages per non-empty queue."""
    return {q: s["ready"] + s["delayed"] for q, s in app.broker.queue_sizes().items() if s["ready"] + s["delayed"]}


# --- eager results ---

def test_delay_returns_eager_result_with_value(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(2, 3)
    assert isinstance(result, EagerResult)
    assert result.get() == 5
    assert result.get(timeout=0.1) == 5
    assert result.result == result.info == 5
    assert result.state == result.status == states.SUCCESS
    assert result.ready() and result.successful() and not result.failed()
    assert result.date_done is not None
    assert queued(app) == {}  # nothing went to the broker

    fixed = add.apply_async((1, 1), task_id="my-id", countdown=30, queue="elsewhere")
    assert fixed.id == "my-id" and fixed.get() == 2
    assert add.apply_async(kwargs={"x": 4, "y": 5}).get() == 9
    assert add(10, 20) == 30  # a plain call still works


def test_eager_failure_is_recorded(app: Celeriac) -> None:
    @app.task
    def boom(x: int) -> None:
        raise ValueError(f"bad {x}")

    result = boom.delay(7)
    assert result.state == states.FAILURE
    assert result.failed() and result.ready() and not result.successful()
    assert isinstance(result.result, ValueError) and str(result.result) == "bad 7"
    with pytest.raises(ValueError, match="bad 7"):
        result.get()
    assert isinstance(result.get(propagate=False), ValueError)
    assert result.traceback is not None
    assert "ValueError: bad 7" in result.traceback
    assert "boom" in result.traceback


def test_task_eager_propagates(app: Celeriac) -> None:
    @app.task
    def boom() -> None:
        raise KeyError("nope")

    app.conf.task_eager_propagates = True
    with pytest.raises(KeyError, match="nope"):
        boom.delay()
    app.conf.task_eager_propagates = False
    assert boom.delay().state == states.FAILURE
    with pytest.raises(KeyError):
        boom.apply(throw=True)


def test_eager_request_context(app: Celeriac) -> None:
    seen: dict[str, Any] = {}

    @app.task(bind=True)
    def inspect_request(self: Task[Any, Any], x: int, *, y: int) -> str:
        r = self.request
        seen.update(id=r.id, args=r.args, kwargs=r.kwargs, retries=r.retries, eager=r.is_eager,
                    direct=r.called_directly, root=r.root_id, task=r.task)
        return self.name

    result = inspect_request.apply_async((1,), {"y": 2}, task_id="req-1")
    assert result.get() == inspect_request.name
    assert seen == {"id": "req-1", "args": (1,), "kwargs": {"y": 2}, "retries": 0, "eager": True,
                    "direct": False, "root": "req-1", "task": inspect_request.name}


def test_eager_child_task_knows_its_parent(app: Celeriac) -> None:
    seen: dict[str, Any] = {}

    @app.task(bind=True)
    def child(self: Task[Any, Any]) -> None:
        seen["parent"], seen["root"] = self.request.parent_id, self.request.root_id

    @app.task
    def parent() -> None:
        child.delay()

    parent.apply_async(task_id="the-parent")
    assert seen == {"parent": "the-parent", "root": "the-parent"}


def test_store_eager_result(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    app.conf.task_store_eager_result = True
    result = add.delay(1, 2)
    assert app.AsyncResult(result.id).get(timeout=1) == 3


# --- eager retries ---

def test_eager_retry_runs_again_at_once_until_success(app: Celeriac) -> None:
    attempts: list[int] = []

    @app.task(bind=True, max_retries=5)
    def flaky(self: Task[Any, Any], x: int) -> int:
        attempts.append(self.request.retries)
        if len(attempts) < 3:
            raise self.retry(countdown=60)  # eager: no broker to wait in, so no waiting
        return x * 10

    start = time.monotonic()
    result = flaky.delay(4)
    assert result.get() == 40
    assert result.state == states.SUCCESS
    assert attempts == [0, 1, 2]
    assert time.monotonic() - start < 5


def test_eager_retry_with_new_arguments(app: Celeriac) -> None:
    seen: list[int] = []

    @app.task(bind=True)
    def count_up(self: Task[Any, Any], n: int) -> int:
        seen.append(n)
        if n < 3:
            raise self.retry(args=(n + 1,), countdown=1)
        return n

    assert count_up.delay(0).get() == 3
    assert seen == [0, 1, 2, 3]


def test_eager_max_retries_raises_the_original_exception(app: Celeriac) -> None:
    attempts: list[int] = []

    @app.task(bind=True, max_retries=2)
    def always_fails(self: Task[Any, Any]) -> None:
        attempts.append(self.request.retries)
        raise self.retry(exc=OSError("disk gone"), countdown=5)

    result = always_fails.delay()
    assert attempts == [0, 1, 2]  # the first run and max_retries retries
    assert result.state == states.FAILURE
    assert isinstance(result.result, OSError) and str(result.result) == "disk gone"
    app.conf.task_eager_propagates = True
    with pytest.raises(OSError, match="disk gone"):
        always_fails.delay()


def test_eager_max_retries_without_exc_raises_max_retries_exceeded(app: Celeriac) -> None:
    attempts: list[int] = []

    @app.task(bind=True, max_retries=1)
    def always_retries(self: Task[Any, Any]) -> None:
        attempts.append(1)
        raise self.retry(countdown=5)

    result = always_retries.delay()
    assert len(attempts) == 2
    assert result.state == states.FAILURE
    assert isinstance(result.result, MaxRetriesExceededError)
    with pytest.raises(MaxRetriesExceededError):
        result.get()


def test_retry_max_retries_argument_overrides_the_task_option(app: Celeriac) -> None:
    attempts: list[int] = []

    @app.task(bind=True, max_retries=10)
    def limited(self: Task[Any, Any]) -> None:
        attempts.append(1)
        raise self.retry(countdown=1, max_retries=1)

    assert limited.delay().state == states.FAILURE
    assert len(attempts) == 2


def test_retry_called_directly_raises_the_exception(app: Celeriac) -> None:
    @app.task(bind=True)
    def direct(self: Task[Any, Any]) -> None:
        raise self.retry(exc=LookupError("plain call"))

    with pytest.raises(LookupError, match="plain call"):
        direct()

    @app.task(bind=True)
    def direct_no_exc(self: Task[Any, Any]) -> None:
        raise self.retry()

    with pytest.raises(Retry):
        direct_no_exc()


def test_eager_autoretry_for(app: Celeriac) -> None:
    attempts: list[int] = []

    @app.task(bind=True, autoretry_for=(ConnectionError,), max_retries=5, retry_backoff=True)
    def sometimes(self: Task[Any, Any]) -> str:
        attempts.append(self.request.retries)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    start = time.monotonic()
    assert sometimes.delay().get() == "ok"
    assert attempts == [0, 1, 2]
    assert time.monotonic() - start < 5


def test_eager_autoretry_exhausted_gives_the_original_exception(app: Celeriac) -> None:
    attempts: list[int] = []

    @app.task(autoretry_for=[KeyError], max_retries=3)  # a list is accepted too
    def never() -> None:
        attempts.append(1)
        raise KeyError("k")

    result = never.delay()
    assert len(attempts) == 4
    assert result.state == states.FAILURE
    assert isinstance(result.result, KeyError)


def test_autoretry_only_for_the_listed_exceptions(app: Celeriac) -> None:
    attempts: list[str] = []

    @app.task(autoretry_for=(OSError,), dont_autoretry_for=(FileNotFoundError,), max_retries=3)
    def picky(kind: str) -> None:
        attempts.append(kind)
        raise {"other": ValueError, "excluded": FileNotFoundError}[kind]("x")

    assert picky.delay("other").state == states.FAILURE
    assert picky.delay("excluded").state == states.FAILURE
    assert attempts == ["other", "excluded"]  # neither was retried


# --- handlers ---

class Recording(Task):  # type: ignore[type-arg]
    """A base class recording every handler call."""

    calls: list[tuple[Any, ...]]

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        self.calls.append(("before_start", task_id, args, kwargs))

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        self.calls.append(("on_success", retval, task_id, args, kwargs))

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        self.calls.append(("on_failure", exc, task_id, args, kwargs, einfo))

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        self.calls.append(("on_retry", exc, task_id, args, kwargs, einfo))

    def after_return(self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        self.calls.append(("after_return", status, retval, task_id, args, kwargs, einfo))


def test_handlers_on_success(app: Celeriac) -> None:
    @app.task(base=Recording, calls=[])
    def add(x: int, y: int) -> int:
        return x + y

    add.apply_async((2,), {"y": 3}, task_id="t-ok")
    assert add.calls == [
        ("before_start", "t-ok", (2,), {"y": 3}),
        ("on_success", 5, "t-ok", (2,), {"y": 3}),
        ("after_return", states.SUCCESS, 5, "t-ok", (2,), {"y": 3}, None),
    ]


def test_handlers_on_failure(app: Celeriac) -> None:
    error = ValueError("broken")

    @app.task(base=Recording, calls=[])
    def fail(x: int) -> None:
        raise error

    fail.apply_async((1,), task_id="t-fail")
    names = [c[0] for c in fail.calls]
    assert names == ["before_start", "on_failure", "after_return"]
    _, exc, task_id, args, kwargs, einfo = fail.calls[1]
    assert (exc, task_id, args, kwargs) == (error, "t-fail", (1,), {})
    assert isinstance(einfo, ExceptionInfo)
    assert einfo.exception is error and einfo.type is ValueError
    assert "ValueError: broken" in einfo.traceback and "ValueError: broken" in str(einfo)
    assert fail.calls[2] == ("after_return", states.FAILURE, error, "t-fail", (1,), {}, einfo)


def test_handlers_on_retry(app: Celeriac) -> None:
    cause = ConnectionError("flaky")

    @app.task(base=Recording, calls=[], bind=True, max_retries=3)
    def retry_once(self: Task[Any, Any], x: int) -> int:
        if self.request.retries == 0:
            raise self.retry(exc=cause, countdown=1)
        return x

    assert retry_once.apply_async((9,), task_id="t-retry").get() == 9
    names = [c[0] for c in retry_once.calls]
    assert names == ["before_start", "on_retry", "after_return", "before_start", "on_success", "after_return"]
    _, exc, task_id, args, kwargs, einfo = retry_once.calls[1]
    assert (exc, task_id, args, kwargs) == (cause, "t-retry", (9,), {})
    assert isinstance(einfo, ExceptionInfo) and einfo.exception is cause
    assert retry_once.calls[2][1] == states.RETRY
    assert retry_once.calls[-1][:3] == ("after_return", states.SUCCESS, 9)


def test_a_raising_handler_does_not_change_the_outcome(app: Celeriac) -> None:
    class Broken(Task):  # type: ignore[type-arg]
        def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
            raise RuntimeError("handler bug")

    @app.task(base=Broken)
    def fine() -> int:
        return 1

    result = fine.delay()
    assert result.state == states.SUCCESS and result.get() == 1


# --- signals ---

@pytest.fixture
def connect() -> Iterator[Any]:
    connected: list[tuple[signals.Signal, Any, Any]] = []

    def do(signal: signals.Signal, sender: Any) -> list[dict[str, Any]]:
        received: list[dict[str, Any]] = []

        def receiver(**kwargs: Any) -> None:
            received.append(kwargs)

        signal.connect(receiver, sender=sender)
        connected.append((signal, receiver, sender))
        return received

    yield do
    for signal, receiver, sender in connected:
        signal.disconnect(receiver, sender=sender)


def test_signals_on_success(app: Celeriac, connect: Any) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    prerun, postrun = connect(signals.task_prerun, add), connect(signals.task_postrun, add)
    success, failure = connect(signals.task_success, add), connect(signals.task_failure, add)
    add.apply_async((1, 2), task_id="sig-1")
    assert len(prerun) == 1
    assert prerun[0]["sender"] is add and prerun[0]["task"] is add
    assert prerun[0]["task_id"] == "sig-1" and prerun[0]["args"] == (1, 2) and prerun[0]["kwargs"] == {}
    assert prerun[0]["signal"] is signals.task_prerun
    assert len(postrun) == 1
    assert postrun[0]["retval"] == 3 and postrun[0]["state"] == states.SUCCESS
    assert postrun[0]["task_id"] == "sig-1" and postrun[0]["task"] is add
    assert [(s["sender"], s["result"]) for s in success] == [(add, 3)]
    assert failure == []


def test_signals_on_failure(app: Celeriac, connect: Any) -> None:
    @app.task
    def fail(x: int) -> None:
        raise ValueError("sig failure")

    failure, success = connect(signals.task_failure, fail), connect(signals.task_success, fail)
    postrun = connect(signals.task_postrun, fail)
    fail.apply_async((5,), task_id="sig-2")
    assert success == []
    assert len(failure) == 1
    f = failure[0]
    assert f["sender"] is fail and f["task_id"] == "sig-2"
    assert isinstance(f["exception"], ValueError) and f["args"] == (5,) and f["kwargs"] == {}
    assert isinstance(f["einfo"], ExceptionInfo) and f["einfo"].exception is f["exception"]
    assert "traceback" in f
    assert postrun[0]["state"] == states.FAILURE and postrun[0]["retval"] is f["exception"]


def test_signal_on_retry(app: Celeriac, connect: Any) -> None:
    @app.task(bind=True)
    def once(self: Task[Any, Any]) -> str:
        if self.request.retries == 0:
            raise self.retry(exc=TimeoutError("slow"), countdown=1)
        return "done"

    retried = connect(signals.task_retry, once)
    prerun = connect(signals.task_prerun, once)
    assert once.apply_async(task_id="sig-3").get() == "done"
    assert len(retried) == 1
    assert retried[0]["sender"] is once
    assert isinstance(retried[0]["reason"], TimeoutError)
    assert retried[0]["request"].id == "sig-3" and retried[0]["request"].retries == 0
    assert isinstance(retried[0]["einfo"], ExceptionInfo)
    assert len(prerun) == 2


def test_signal_receiver_for_another_sender_is_not_called(app: Celeriac, connect: Any) -> None:
    @app.task
    def one() -> int:
        return 1

    @app.task
    def two() -> int:
        return 2

    got_two = connect(signals.task_success, two)
    got_by_name = connect(signals.task_success, one.name)
    one.delay()
    assert got_two == []
    assert [s["result"] for s in got_by_name] == [1]


# --- async def tasks ---

def test_apply_of_an_async_task(app: Celeriac) -> None:
    @app.task
    async def mul(x: int, y: int) -> int:
        await asyncio.sleep(0)
        return x * y

    assert isinstance(mul, AsyncTask) and mul.is_async
    result = mul.apply((3, 4))
    assert isinstance(result, EagerResult)
    assert result.get() == 12 and result.state == states.SUCCESS
    assert mul.delay(5, 6).get() == 30  # eager delay of an async task
    assert asyncio.run(mul(2, 2)) == 4  # a plain call gives the coroutine


def test_apply_of_an_async_task_inside_a_running_loop(app: Celeriac) -> None:
    @app.task(bind=True)
    async def who(self: Task[Any, Any]) -> str:
        await asyncio.sleep(0)
        return str(self.request.id)

    async def main() -> str:
        return str(who.apply(task_id="in-loop").get())

    assert asyncio.run(main()) == "in-loop"


def test_async_task_failure(app: Celeriac) -> None:
    @app.task
    async def afail() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("async boom")

    result = afail.apply()
    assert result.state == states.FAILURE
    assert isinstance(result.result, RuntimeError)


# --- creating tasks ---

def test_task_name_is_module_dot_function(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    assert add.name == f"{__name__}.add"
    assert app.tasks[add.name] is add
    assert add.app is app
    with pytest.raises(NotRegistered):
        app.tasks["no.such.task"]
    with pytest.raises(KeyError):  # NotRegistered is a KeyError, as in Celery
        app.tasks["no.such.task"]


def test_task_name_in_main_module_uses_the_app_name() -> None:
    a = Celeriac("proj", broker="memory://n", backend="memory://n")
    assert a.gen_task_name("add", "__main__") == "proj.add"
    assert a.gen_task_name("add", "proj.tasks") == "proj.tasks.add"


def test_task_with_explicit_name_and_options(app: Celeriac) -> None:
    @app.task(name="custom.adder", max_retries=7, queue="math", priority=3, ignore_result=True)
    def add(x: int, y: int) -> int:
        return x + y

    assert add.name == "custom.adder"
    assert app.tasks["custom.adder"] is add
    assert (add.max_retries, add.queue, add.priority, add.ignore_result) == (7, "math", 3, True)
    assert add.delay(1, 1).get() == 2


def test_task_with_base_class(app: Celeriac) -> None:
    class MyTask(Task):  # type: ignore[type-arg]
        greeting = "hello"

        def shout(self) -> str:
            return f"{self.greeting} from {self.name}"

    @app.task(base=MyTask, bind=True)
    def use_base(self: MyTask) -> str:
        return self.shout()

    assert isinstance(use_base, MyTask)
    assert use_base.shout() == f"hello from {use_base.name}"
    assert use_base.delay().get() == f"hello from {use_base.name}"


def test_app_task_cls_is_the_default_base() -> None:
    class AppWide(Task):  # type: ignore[type-arg]
        marker = "app-wide"

    a = Celeriac("x", broker="memory://tc", backend="memory://tc", task_cls=AppWide)

    @a.task
    def f() -> None:
        return None

    assert isinstance(f, AppWide) and f.marker == "app-wide"


def test_bound_task_gets_itself(app: Celeriac) -> None:
    @app.task(bind=True)
    def me(self: Task[Any, Any]) -> str:
        return self.name

    assert me.delay().get() == me.name
    assert me() == me.name


def test_celery_alias() -> None:
    assert Celery is Celeriac


@pytest.fixture
def isolated_shared_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """shared_task registers on every app: keep this test's shared tasks off other tests' apps."""
    monkeypatch.setattr(app_module, "_shared_tasks", [])
    monkeypatch.setattr(app_module, "_all_apps", [])


def test_shared_task(isolated_shared_tasks: None) -> None:
    before = memory_app()

    @shared_task
    def shared_mul(x: int, y: int) -> int:
        return x * y

    @shared_task(name="shared.explicit")
    def shared_named() -> str:
        return "named"

    after = memory_app()
    name = f"{__name__}.shared_mul"
    for a in (before, after):
        assert name in a.tasks and "shared.explicit" in a.tasks
    assert after.tasks[name] is not before.tasks[name]

    # Used through whatever app is current: `after` was created last.
    assert shared_mul.name == name
    assert shared_mul.app is after
    assert shared_mul.delay(2, 3).get() == 6
    assert shared_mul(3, 3) == 9
    assert shared_named.delay().get() == "named"
    before.set_current()
    assert shared_mul.app is before


# --- configuration ---

def test_conf_update_and_attribute_assignment(app: Celeriac) -> None:
    app.conf.update(task_default_queue="updated", result_expires=60, my_custom_key="x")
    assert app.conf.task_default_queue == "updated" and app.conf["task_default_queue"] == "updated"
    assert app.conf.result_expires == 60
    assert app.conf.my_custom_key == "x"
    app.conf.task_serializer = "pickle"
    assert app.conf["task_serializer"] == "pickle"
    app.conf["worker_concurrency"] = 3
    assert app.conf.worker_concurrency == 3
    with pytest.raises(AttributeError):
        app.conf.no_such_setting  # noqa: B018


def test_conf_defaults_follow_celery() -> None:
    a = Celeriac("x", broker="memory://d", backend="memory://d")
    assert a.conf.task_default_queue == "celery"
    assert a.conf.task_serializer == "json" and a.conf.accept_content == ["json"]
    assert a.conf.task_always_eager is False and a.conf.task_eager_propagates is False


def test_conf_update_makes_delay_eager(lazy_app: Celeriac) -> None:
    @lazy_app.task
    def add(x: int, y: int) -> int:
        return x + y

    assert not isinstance(add.delay(1, 2), EagerResult)
    assert queued(lazy_app) == {"celery": 1}
    lazy_app.conf.update(task_always_eager=True)
    assert add.delay(1, 2).get() == 3
    assert queued(lazy_app) == {"celery": 1}


def test_settings_as_constructor_keywords() -> None:
    a = Celeriac("x", broker="memory://kw", backend="memory://kw", task_default_queue="kwq", task_always_eager=True)
    assert a.conf.task_default_queue == "kwq" and a.conf.task_always_eager is True


def test_config_from_object_with_a_module_like_object(lazy_app: Celeriac) -> None:
    name = uuid.uuid4().hex
    config = types.SimpleNamespace(broker_url=f"memory://obj-{name}", result_backend=f"memory://obj-{name}",
                                   task_always_eager=True, task_default_queue="from-object",
                                   NotASetting="ignored")
    lazy_app.broker  # noqa: B018 - connected before: config_from_object must reset it
    lazy_app.config_from_object(config)
    assert lazy_app.conf.broker_url == f"memory://obj-{name}"
    assert lazy_app.broker_url == f"memory://obj-{name}"
    assert lazy_app.broker.url == f"memory://obj-{name}"
    assert lazy_app.conf.task_always_eager is True
    assert lazy_app.conf.task_default_queue == "from-object"
    assert "NotASetting" not in lazy_app.conf and "notasetting" not in lazy_app.conf


def test_config_from_object_with_a_class_and_a_dict(app: Celeriac) -> None:
    class Config:
        task_default_queue = "from-class"
        result_expires = 10

    app.config_from_object(Config)
    assert app.conf.task_default_queue == "from-class" and app.conf.result_expires == 10
    app.config_from_object({"task_default_queue": "from-dict"})
    assert app.conf.task_default_queue == "from-dict"


def test_config_from_object_with_a_module_path(app: Celeriac, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    module = f"celeriac_conf_{uuid.uuid4().hex}"
    (tmp_path / f"{module}.py").write_text("task_default_queue = 'from-module'\nresult_expires = 5\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        app.config_from_object(module)
        assert app.conf.task_default_queue == "from-module" and app.conf.result_expires == 5
    finally:
        sys.modules.pop(module, None)
    with pytest.raises(ImportError):
        app.config_from_object("no_such_config_module_xyz")
    app.config_from_object("no_such_config_module_xyz", silent=True)


def test_config_from_object_with_celery_namespace(lazy_app: Celeriac) -> None:
    name = uuid.uuid4().hex
    settings = types.ModuleType("django_settings")
    settings.CELERY_BROKER_URL = f"memory://ns-{name}"  # type: ignore[attr-defined]
    settings.CELERY_RESULT_BACKEND = f"memory://ns-{name}"  # type: ignore[attr-defined]
    settings.CELERY_TASK_ALWAYS_EAGER = True  # type: ignore[attr-defined]
    settings.CELERY_TASK_DEFAULT_QUEUE = "django"  # type: ignore[attr-defined]
    settings.DEBUG = True  # type: ignore[attr-defined]
    settings.task_serializer = "pickle"  # type: ignore[attr-defined]  # not prefixed: not ours
    lazy_app.config_from_object(settings, namespace="CELERY")
    assert lazy_app.conf.broker_url == f"memory://ns-{name}"
    assert lazy_app.broker_url == f"memory://ns-{name}"
    assert lazy_app.conf.result_backend == f"memory://ns-{name}"
    assert lazy_app.conf.task_always_eager is True
    assert lazy_app.conf.task_default_queue == "django"
    assert lazy_app.conf.task_serializer == "json"
    assert "debug" not in lazy_app.conf and "DEBUG" not in lazy_app.conf


def test_config_from_object_reads_celery3_upper_case_names(app: Celeriac) -> None:
    app.config_from_object({"CELERY_ALWAYS_EAGER": False, "BROKER_URL": "memory://legacy",
                            "CELERY_ROUTES": {"a.*": "qa"}})
    assert app.conf.task_always_eager is False
    assert app.conf.broker_url == "memory://legacy"
    assert app.conf.task_routes == {"a.*": "qa"}


# --- URLs: environment overrides and the default ---

def test_env_vars_override_the_apps_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    own, env = f"memory://own-{uuid.uuid4().hex}", f"memory://env-{uuid.uuid4().hex}"
    a = Celeriac("x", broker=own, backend=own)
    assert a.broker_url == own and a.result_backend_url == own

    monkeypatch.setenv("CELERIAC_BROKER_URL", env)
    monkeypatch.setenv("CELERIAC_RESULT_BACKEND", env + "-results")
    a._reset_connections()
    assert a.broker_url == env
    assert a.result_backend_url == env + "-results"
    assert isinstance(a.broker, MemoryBroker) and a.broker.url == env
    assert isinstance(a.backend, MemoryResultStore) and a.backend.url == env + "-results"

    @a.task
    def add(x: int, y: int) -> int:
        return x + y

    add.delay(1, 2)
    assert MemoryBroker(env).queue_sizes(["celery"])["celery"]["ready"] == 1
    assert MemoryBroker(own).queue_sizes(["celery"])["celery"]["ready"] == 0

    monkeypatch.delenv("CELERIAC_BROKER_URL")
    monkeypatch.delenv("CELERIAC_RESULT_BACKEND")
    a._reset_connections()
    assert a.broker_url == own and a.result_backend_url == own


def test_celerys_env_vars_count_too_and_celeriacs_win(monkeypatch: pytest.MonkeyPatch) -> None:
    own, celery_env, ours = (f"memory://{kind}-{uuid.uuid4().hex}" for kind in ("own", "celery", "ours"))
    a = Celeriac("x", broker=own, backend=own)
    monkeypatch.setenv("CELERY_BROKER_URL", celery_env)
    monkeypatch.setenv("CELERY_RESULT_BACKEND", celery_env + "-results")
    a._reset_connections()
    assert (a.broker_url, a.result_backend_url) == (celery_env, celery_env + "-results")
    monkeypatch.setenv("CELERIAC_BROKER_URL", ours)
    monkeypatch.setenv("CELERIAC_RESULT_BACKEND", ours + "-results")
    a._reset_connections()
    assert (a.broker_url, a.result_backend_url) == (ours, ours + "-results")


def test_env_broker_alone_also_moves_the_default_result_store(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    env = f"memory://env-{uuid.uuid4().hex}"
    monkeypatch.setenv("CELERIAC_BROKER_URL", env)
    a = Celeriac("x")
    assert a.broker_url == env
    assert a.result_backend_url == env  # no result store configured: it follows the broker


def test_default_urls_are_an_absolute_sqlite_file_in_the_cwd(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    a = Celeriac("x")
    expected = "sqlite:///" + os.path.join(os.getcwd(), "celeriac.db")
    assert a.broker_url == expected
    assert a.result_backend_url == expected
    path = a.broker_url[len("sqlite:///"):]
    assert os.path.isabs(path) and os.path.samefile(os.path.dirname(path), tmp_path)
    assert isinstance(a.broker, SQLiteBroker)
    # Resolved once: a later chdir (a worker daemonizing, say) does not move the file.
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert a.broker_url == expected


def test_relative_sqlite_url_is_made_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    a = Celeriac("x", broker="sqlite:///rel/b.db")
    assert a.broker_url == "sqlite:///" + os.path.join(os.getcwd(), "rel", "b.db")
    assert a.result_backend_url == a.broker_url


def test_result_store_defaults_to_sqlite_for_a_broker_that_stores_no_results(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    a = Celeriac("x", broker="amqp://guest:secret@localhost//")
    assert a.result_backend_url == "sqlite:///" + os.path.join(os.getcwd(), "celeriac.db")


# --- routing ---

def test_task_routes_dict_exact_name_and_glob(lazy_app: Celeriac) -> None:
    lazy_app.conf.task_routes = {
        "proj.add": "adds",
        "proj.images.*": {"queue": "images", "priority": 7},
    }

    @lazy_app.task(name="proj.add")
    def add(x: int, y: int) -> int:
        return x + y

    @lazy_app.task(name="proj.images.resize")
    def resize(path: str) -> None:
        return None

    @lazy_app.task(name="proj.other")
    def other() -> None:
        return None

    add.delay(1, 2)
    resize.delay("a.png")
    other.delay()
    lazy_app.send_task("proj.images.not_imported_here")
    assert queued(lazy_app) == {"adds": 1, "images": 2, "celery": 1}
    [msg] = lazy_app.broker.fetch(["images"], "w", "w-0", 1, timeout=0)
    assert msg.priority == 7
    assert unpack(msg.payload).task_name == "proj.images.resize"


def test_explicit_queue_beats_the_route(lazy_app: Celeriac) -> None:
    lazy_app.conf.task_routes = {"proj.add": "adds"}

    @lazy_app.task(name="proj.add")
    def add(x: int, y: int) -> int:
        return x + y

    add.apply_async((1, 2), queue="explicit")
    assert queued(lazy_app) == {"explicit": 1}


def test_task_routes_callable_router(lazy_app: Celeriac) -> None:
    calls: list[tuple[Any, ...]] = []

    def router(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any) -> Any:
        calls.append((name, args, kwargs, task))
        if name.endswith(".urgent"):
            return {"queue": "urgent", "priority": 9}
        if kwargs.get("big"):
            return "big"
        return None

    lazy_app.conf.task_routes = [router, {"proj.*": "proj-default"}]

    @lazy_app.task(name="proj.urgent")
    def urgent() -> None:
        return None

    @lazy_app.task(name="proj.work")
    def work(big: bool = False) -> None:
        return None

    urgent.delay()
    work.delay(big=True)
    work.delay(big=False)  # the router says nothing: the next router (the dict) decides
    assert queued(lazy_app) == {"urgent": 1, "big": 1, "proj-default": 1}
    assert calls[0] == ("proj.urgent", (), {}, urgent)
    assert calls[1][:3] == ("proj.work", (), {"big": True})
    [msg] = lazy_app.broker.fetch(["urgent"], "w", "w-0", 1, timeout=0)
    assert msg.priority == 9


def test_no_route_uses_the_default_queue_setting(lazy_app: Celeriac) -> None:
    lazy_app.conf.task_default_queue = "mine"

    @lazy_app.task
    def f() -> None:
        return None

    @lazy_app.task(queue="task-queue")
    def g() -> None:
        return None

    f.delay()
    g.delay()
    assert queued(lazy_app) == {"mine": 1, "task-queue": 1}


def test_exact_route_beats_an_earlier_glob(lazy_app: Celeriac) -> None:
    lazy_app.conf.task_routes = {"proj.*": "everything", "proj.add": "adds"}

    @lazy_app.task(name="proj.add")
    def add(x: int, y: int) -> int:
        return x + y

    add.delay(1, 2)
    assert queued(lazy_app) == {"adds": 1}


def test_eager_ignore_is_not_reported_as_success(app: Celeriac) -> None:
    from celeriac.exceptions import Ignore

    @app.task
    def ignored() -> None:
        raise Ignore()

    result = ignored.delay()
    assert result.state == states.IGNORED
