"""The revocation contract of every result store: durable, incremental, expiring."""

from __future__ import annotations

from typing import Any


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


def test_follow_logs_reads_both_logs_as_the_separate_calls_do(any_store: ResultStore) -> None:
    assert any_store.follow_logs(0, 0) == (any_store.control_since(0), any_store.revoked_since(0))
    any_store.control_send({"command": "ping"}, expires_in=60)
    any_store.revoke(["a"], expires_in=60, signal="SIGTERM")
    (commands, control_cursor), (revoked, revoke_cursor) = any_store.follow_logs(0, 0)
    assert [c["command"] for c in commands] == ["ping"] and control_cursor > 0
    assert revoked == [("a", "SIGTERM")] and revoke_cursor > 0
    assert any_store.follow_logs(control_cursor, revoke_cursor) == (([], control_cursor), ([], revoke_cursor))
    any_store.revoke(["b"], expires_in=60)
    assert any_store.follow_logs(control_cursor, revoke_cursor)[1][0] == [("b", None)]
    assert any_store.follow_logs(-1, 0)[0] == ([], control_cursor)  # -1: only where the log is now


def test_a_pool_slot_reads_control_and_revocations_in_one_call(any_store_url: str) -> None:
    from types import SimpleNamespace

    from celeriac.worker.remote import ProcessControl

    app = Celeriac("follow", broker="memory://unused", backend=any_store_url, set_as_current=False)
    store = app.backend
    store.revoked_since(0)  # Redis: the script is loaded by its first call (a first follow_logs falls back to it)
    calls: list[str] = []
    for name in ("follow_logs", "control_since", "revoked_since"):
        real = getattr(store, name)
        setattr(store, name, lambda *a, _n=name, _f=real: (calls.append(_n), _f(*a))[1])
    slot = SimpleNamespace(app=app, revocations=Revocations(app, interval=0.05), hostname="w@h", queues=["celery"],
                           worker_id="w", prefetch=4)
    control = ProcessControl(slot, 0, 0.05)  # type: ignore[arg-type]
    store.revoke(["gone"], expires_in=60)
    store.control_send({"command": "add_consumer", "arguments": {"queue": "extra"}}, expires_in=60)
    calls.clear()
    control.refresh()
    assert calls[:1] == ["follow_logs"]  # one call for both
    if any_store_url.startswith(("redis://", "postgresql://", "postgres://")):
        assert calls == ["follow_logs"]  # and one round trip: not the two separate reads
    assert slot.queues == ["celery", "extra"]
    calls.clear()
    assert slot.revocations.is_revoked("gone") and calls == []  # read with the control log: not again
    wait_until(lambda: (control.refresh(), calls)[1][:1] == ["follow_logs"], 5, message="both due again")


def test_redis_follow_logs_after_the_server_lost_its_scripts(redis_server: Any) -> None:
    if not redis_server.ping():
        redis_server.start()
    redis_server.flush()
    store = create_result_store(redis_server.url)
    try:
        store.revoke(["a"], expires_in=60)
        redis_server.command("SCRIPT", "FLUSH")
        assert store.follow_logs(0, 0)[1][0] == [("a", None)]  # loaded again by the script call
        assert store.follow_logs(0, 0)[1][0] == [("a", None)]
    finally:
        store.close()
