"""The revocation contract of every result store: durable, incremental, expiring."""

from __future__ import annotations



from celeriac import Celeriac
from celeriac.backends import ResultStore, create_result_store
from celeriac.worker.revocations import Revocations
from helpers import wait_until


def test_revocations_are_read_incrementally(any_store: ResultStore) -> None:
    assert any_store.revoked_since(0) == ([], 0)
    any_store.revoke(["a", "b"], expires_in=60)
    any_store.revoke(["c"], expires_in=60, signal="SIGKILL")
    found, cursor = any_store.revoked_since(0)
    assert found == [("a", None), ("b", None), ("c", "SIGKILL")]
    assert any_store.revoked_since(cursor) == ([], cursor)
    any_store.revoke(["d"], expires_in=60, signal="SIGTERM")
    found, later = any_store.revoked_since(cursor)
    assert found == [("d", "SIGTERM")] and later > cursor


def test_revocations_expire(any_store: ResultStore) -> None:
    any_store.revoke(["short"], expires_in=0.2)
    any_store.revoke(["long"], expires_in=60)
    assert any_store.revoked_since(0)[0] == [("short", None), ("long", None)]
    wait_until(lambda: any_store.revoked_since(0)[0] == [("long", None)], 5, message="the short one expired")


def test_a_second_store_instance_sees_them(any_store: ResultStore, any_store_url: str) -> None:
    any_store.revoke(["x"], expires_in=60)
    other = create_result_store(any_store_url)
    try:
        assert other.revoked_since(0)[0] == [("x", None)]
    finally:
        other.close()


def test_worker_view_refreshes_at_most_every_interval(any_store_url: str) -> None:
    app = Celeriac("revocations", broker="memory://unused", backend=any_store_url, set_as_current=False)
    view = Revocations(app, interval=3600)
    assert not view.is_revoked("late")  # first read happens now
    app.backend.revoke(["late"], expires_in=60)
    assert not view.is_revoked("late")  # within the interval: not read again
    view.refresh(force=True)
    assert view.is_revoked("late")
    quick = Revocations(app, interval=0)
    assert quick.is_revoked("late")
