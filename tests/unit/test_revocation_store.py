"""The revocation contract of every result store: durable, incremental, expiring."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from celeriac import Celeriac
from celeriac.backends import ResultStore, create_result_store
from celeriac.worker.revocations import Revocations


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return f"memory://revoked-{uuid.uuid4().hex}"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    server = request.getfixturevalue("redis_server")
    if not server.ping():
        server.start()
    server.flush()
    return str(server.url)


@pytest.fixture
def store(store_url: str) -> Iterator[ResultStore]:
    s = create_result_store(store_url)
    yield s
    s.close()


def test_revocations_are_read_incrementally(store: ResultStore) -> None:
    assert store.revoked_since(0) == ([], 0)
    store.revoke(["a", "b"], expires_in=60)
    store.revoke(["c"], expires_in=60, signal="SIGKILL")
    found, cursor = store.revoked_since(0)
    assert found == [("a", None), ("b", None), ("c", "SIGKILL")]
    assert store.revoked_since(cursor) == ([], cursor)
    store.revoke(["d"], expires_in=60, signal="SIGTERM")
    found, later = store.revoked_since(cursor)
    assert found == [("d", "SIGTERM")] and later > cursor


def test_revocations_expire(store: ResultStore) -> None:
    store.revoke(["short"], expires_in=0.2)
    store.revoke(["long"], expires_in=60)
    time.sleep(0.3)  # the store's own clock decides expiry: nothing to poll for
    found, _ = store.revoked_since(0)
    assert found == [("long", None)]


def test_a_second_store_instance_sees_them(store: ResultStore, store_url: str) -> None:
    store.revoke(["x"], expires_in=60)
    other = create_result_store(store_url)
    try:
        assert other.revoked_since(0)[0] == [("x", None)]
    finally:
        other.close()


def test_worker_view_refreshes_at_most_every_interval(store_url: str) -> None:
    app = Celeriac("revocations", broker="memory://unused", backend=store_url, set_as_current=False)
    view = Revocations(app, interval=3600)
    assert not view.is_revoked("late")  # first read happens now
    app.backend.revoke(["late"], expires_in=60)
    assert not view.is_revoked("late")  # within the interval: not read again
    view.refresh(force=True)
    assert view.is_revoked("late")
    quick = Revocations(app, interval=0)
    assert quick.is_revoked("late")
