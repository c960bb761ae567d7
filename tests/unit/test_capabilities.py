"""app.capabilities: the broker's liveness, schedule store and event stream, else the result store's."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac import transports
from celeriac.capabilities import keeps_results
from celeriac.exceptions import ImproperlyConfigured

pytestmark = pytest.mark.timeout(30)


def _app(tmp_path: Path) -> Celeriac:
    return Celeriac("caps", broker=f"memory://{uuid.uuid4().hex}", backend=f"sqlite:///{tmp_path / 'r.db'}",
                    set_as_current=False)


def test_a_broker_url_keeps_results_exactly_when_a_result_store_serves_its_scheme() -> None:
    assert transports.schemes("results")
    for scheme in transports.schemes("results"):
        assert keeps_results(f"{scheme}://host/0")
    assert not keeps_results("amqp://guest@localhost//") and not keeps_results("pyamqp://h//")
    app = Celeriac("caps", broker="amqp://guest@localhost//", set_as_current=False)
    assert app.result_backend_url.startswith("sqlite:///")  # RabbitMQ keeps no results: the default file
    app = Celeriac("caps", broker="redis://127.0.0.1:1/3", set_as_current=False)
    assert app.result_backend_url == "redis://127.0.0.1:1/3"


def test_liveness_lives_in_the_broker_when_it_tracks_workers(tmp_path: Path) -> None:
    app = _app(tmp_path)
    try:
        app.capabilities.heartbeat("w1", 30.0, {"hostname": "w1@host"})
        assert "w1" in app.capabilities.live_workers()
        assert app.backend.live_workers() == {}  # not written twice
    finally:
        app.close()


def test_liveness_falls_back_to_the_result_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(tmp_path)
    try:
        monkeypatch.setattr(type(app.broker), "tracks_workers", False)  # as RabbitMQ's broker
        app.capabilities.heartbeat("w2", 30.0, {"hostname": "w2@host"})
        assert "w2" in app.backend.live_workers()
        assert "w2" in app.capabilities.live_workers() and "w2" in app.control.live_workers()
        app.capabilities.forget_worker("w2")
        assert "w2" not in app.capabilities.live_workers()
    finally:
        app.close()


def test_schedule_store_is_the_brokers_else_the_result_stores(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(tmp_path)
    sent: list[Any] = []
    try:
        assert type(app.capabilities.schedule_store("b", sent.extend)).__module__ == "celeriac.transports.memory.broker"
        monkeypatch.setattr(app.broker, "schedule_store", lambda name, publish: None)
        assert type(app.capabilities.schedule_store("b", sent.extend)).__name__.startswith("SQLite")
        monkeypatch.setattr(app.backend, "schedule_store", lambda name, publish: None)
        with pytest.raises(ImproperlyConfigured, match="beat keeps its state"):
            app.capabilities.schedule_store("b", sent.extend)
    finally:
        app.close()
