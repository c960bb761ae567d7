"""Celery-only options: a one-line warning or error naming each, never a silent drop; and
pydantic=True without pydantic installed."""

from __future__ import annotations

import sys
import warnings
from typing import Any, Iterator

import pytest
from pydantic import BaseModel

from celeriac import Celeriac, signals
from celeriac.exceptions import CeleryWarning, ImproperlyConfigured


@pytest.fixture
def app() -> Iterator[Celeriac]:
    application = Celeriac("opts", broker="memory://", backend="memory://", set_as_current=False)
    yield application
    application.close()


@pytest.mark.parametrize("option", ["send_events", "acks_on_failure_or_timeout", "trail", "compression"])
def test_harmless_task_option_warns_naming_it(app: Celeriac, option: str) -> None:
    pattern = rf"task test_dropin_options\.f: option {option}= is ignored by celeriac: "
    with pytest.warns(CeleryWarning, match=pattern) as caught:
        @app.task(**{option: False})
        def f() -> None: ...
    assert "test_dropin_options.f" in app.tasks
    assert caught[0].filename == __file__  # points at the decorator, not inside celeriac


@pytest.mark.parametrize("option", ["backend", "Request", "Strategy"])
def test_task_option_that_changes_behaviour_is_an_error(app: Celeriac, option: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=rf"task test_dropin_options\.g: option {option}= is not supported"):
        @app.task(**{option: object()})
        def g() -> None: ...


def test_supported_and_custom_options_do_not_warn(app: Celeriac) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        @app.task(max_retries=1, rate_limit="1/s", throws=(KeyError,), abstract=True, my_own_setting=3)
        def h() -> None: ...
    assert h.my_own_setting == 3 and h.throws == (KeyError,)  # type: ignore[attr-defined]


@pytest.mark.parametrize("option", ["routing_key", "exchange", "retry_policy", "compression", "producer"])
def test_celery_publish_option_warns_naming_it(app: Celeriac, option: str) -> None:
    @app.task
    def k() -> None: ...

    pattern = rf"sending test_dropin_options\.k: option {option}= is ignored by celeriac"
    with pytest.warns(CeleryWarning, match=pattern) as caught:
        k.apply_async((), **{option: "x"})
    assert caught[0].filename == __file__


def test_argsrepr_and_kwargsrepr_replace_what_monitors_show(app: Celeriac) -> None:
    @app.task
    def login(user: str, password: str) -> None: ...

    seen: list[dict[str, Any]] = []

    def capture(headers: dict[str, Any], **_: Any) -> None:
        seen.append(headers)

    signals.before_task_publish.connect(capture)
    try:
        login.apply_async(("ann", "s3cret"), argsrepr="('ann', '***')", kwargsrepr="{}")
        login.apply_async(("bob", "pw"))
    finally:
        signals.before_task_publish.disconnect(capture)
    assert seen[0]["argsrepr"] == "('ann', '***')" and seen[0]["kwargsrepr"] == "{}"
    assert "pw" in seen[1]["argsrepr"]  # by default the real arguments, as in Celery


def test_pydantic_without_pydantic_names_the_extra(app: Celeriac, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydantic", None)  # import pydantic now raises ImportError
    with pytest.raises(ImproperlyConfigured, match=r"pip install 'celeriac\[pydantic\]'"):
        @app.task(pydantic=True)
        def needs_models(x: int) -> int:
            return x


class Point(BaseModel):
    x: int


def test_pydantic_eager_strict_and_passthrough(app: Celeriac) -> None:
    from pydantic import ValidationError

    @app.task(pydantic=True, pydantic_strict=True)
    def strict(p: Point, label: str) -> Point:
        return Point(x=p.x + 1)

    assert strict.apply(({"x": 1}, "plain strings pass through")).get() == {"x": 2}
    with pytest.raises(ValidationError):  # strict: "1" is not an int
        strict.apply(({"x": "1"}, "label")).get()

    @app.task(pydantic=True)
    def returns_other(p: Point) -> int:
        return p.x

    assert returns_other.apply(({"x": "5"},)).get() == 5


def test_pydantic_unresolvable_annotation_warns(app: Celeriac) -> None:
    class Local(BaseModel):
        y: int

    with pytest.warns(CeleryWarning, match=r"cannot resolve its annotations .* passed unvalidated"):
        @app.task(pydantic=True)
        def local(p: Local) -> None: ...


def test_result_extended_on_the_memory_store(app: Celeriac) -> None:
    app.conf.update(result_extended=True, task_store_eager_result=True)

    @app.task(bind=True, max_retries=2)
    def flaky(self: Any, x: int, label: str = "") -> int:
        if self.request.retries < 1:
            raise self.retry(countdown=0)
        return x

    sent = flaky.apply((4,), {"label": "l"}, task_id="ext-1")
    stored = app.AsyncResult(sent.id)
    assert stored.get() == 4
    assert (stored.name, stored.args, stored.kwargs, stored.retries) == (flaky.name, [4], {"label": "l"}, 1)
    assert stored.date_started is not None and stored.date_done is not None
    assert stored.date_started <= stored.date_done
