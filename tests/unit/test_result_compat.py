"""Celery's result-side API: backend methods on every store, ResultSet, ignored results,
parent errors and result shapes (in-process worker; the same on real workers in
tests/integration/test_results_compat.py)."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from types import SimpleNamespace
from typing import Any, Iterator

import pytest

from celeriac import AsyncResult, Celeriac, GroupResult, chain, chord, group, states
from celeriac.backends.base import ResultStore
from celeriac.exceptions import ChordError, TaskRevokedError, TimeoutError
from celeriac.result import ResultSet, result_from_tuple
from celeriac.testing import start_worker


class Declined(Exception):
    pass


# --- the backend methods, on every kind of store ---

def test_get_task_meta_and_friends(any_store: ResultStore) -> None:
    app = Celeriac("meta", broker="memory://meta", backend="memory://meta", set_as_current=False)
    any_store.app = app
    any_store.ensure_chords_allowed()  # never refuses
    unknown = any_store.get_task_meta("nope")
    assert unknown["status"] == states.PENDING and unknown["result"] is None
    assert any_store.get_state("nope") == any_store.get_status("nope") == states.PENDING
    assert not any_store.task_result_exists("nope")

    assert any_store.store_result("t1", {"done": 3, "total": 10}, "PROGRESS") == {"done": 3, "total": 10}
    assert any_store.get_task_meta("t1")["status"] == "PROGRESS"
    assert any_store.get_result("t1") == {"done": 3, "total": 10}
    any_store.mark_as_done("t1", 42)
    meta = any_store.get_task_meta("t1")
    assert meta["status"] == states.SUCCESS and meta["result"] == 42
    assert isinstance(meta["date_done"], datetime) and meta["date_done"].tzinfo is not None
    any_store.mark_as_started("t1", pid=1)  # in-flight never replaces final
    assert any_store.get_state("t1") == states.SUCCESS

    any_store.mark_as_failure("t2", Declined("card 7"), traceback="Traceback ...")
    failed = any_store.get_task_meta("t2")
    assert failed["status"] == states.FAILURE
    assert isinstance(failed["result"], Declined) and failed["result"].args == ("card 7",)
    assert any_store.get_traceback("t2") == "Traceback ..."
    with pytest.raises(Declined, match="card 7"):
        AsyncResult("t2", app=app, backend=any_store).get(timeout=1)

    any_store.mark_as_revoked("t3", reason="user asked")
    assert isinstance(any_store.get_result("t3"), TaskRevokedError)
    any_store.mark_as_retry("t4", OSError("again"))
    assert any_store.get_state("t4") == states.RETRY

    any_store.forget("t1")  # Celery passes one id
    assert any_store.get_state("t1") == states.PENDING
    any_store.forget(["t2", "t3"])
    assert not any_store.task_result_exists("t2") and not any_store.task_result_exists("t3")
    assert "password" not in any_store.as_uri()


def test_wait_for_returns_meta_or_times_out(any_store: ResultStore) -> None:
    any_store.store_result("w1", 5, states.SUCCESS)
    assert any_store.wait_for("w1", timeout=1)["result"] == 5
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        any_store.wait_for("never", timeout=0.3, interval=0.05)
    assert time.monotonic() - started < 2


def test_saved_groups_on_the_backend(any_store: ResultStore) -> None:
    app = Celeriac("groups", broker="memory://groups", backend="memory://groups", set_as_current=False)
    any_store.app = app
    gr = GroupResult("g1", [AsyncResult("a", app=app), GroupResult("g2", [AsyncResult("b", app=app)], app=app)],
                     app=app)
    assert any_store.save_group("g1", gr) is gr
    back = any_store.restore_group("g1")
    assert isinstance(back, GroupResult) and back.id == "g1"
    assert [type(r).__name__ for r in back.results] == ["AsyncResult", "GroupResult"]
    assert back.results[1].results[0].id == "b"
    any_store.delete_group("g1")
    assert any_store.restore_group("g1") is None


# --- in-process worker ---

@pytest.fixture
def wk() -> Iterator[SimpleNamespace]:
    name = uuid.uuid4().hex
    app = Celeriac("compat", broker=f"memory://{name}", backend=f"memory://{name}", set_as_current=False)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def decline(*_args: Any) -> None:
        raise Declined("declined")

    @app.task
    def ident(x: Any) -> Any:
        return x

    @app.task(ignore_result=True)
    def quiet() -> int:
        return 1

    @app.task
    def slow(x: int) -> int:
        time.sleep(0.3)
        return x

    with start_worker(app, concurrency=2):
        yield SimpleNamespace(app=app, add=add, decline=decline, ident=ident, quiet=quiet, slow=slow)


def test_result_set_membership_and_waiting(wk: SimpleNamespace) -> None:
    a, b = wk.add.delay(1, 1), wk.add.delay(2, 2)
    rs = ResultSet([a])
    rs.add(b)
    rs.add(b)  # already a member
    assert len(rs) == 2 and list(rs) == [a, b] and rs[1] is b
    assert rs.get(timeout=5) == [2, 4]
    assert rs.ready() and rs.successful() and not rs.failed() and not rs.waiting()
    assert rs.completed_count() == 2
    rs.update([a, wk.add.delay(3, 3)])
    assert rs.join(timeout=5) == [2, 4, 6]
    seen: list[tuple[str, Any]] = []
    assert rs.join(timeout=5, callback=lambda tid, value: seen.append((tid, value))) == []
    assert seen == [(a.id, 2), (b.id, 4), (rs[2].id, 6)]
    rs.remove(a.id)  # by id, as Celery allows
    assert len(rs) == 2
    with pytest.raises(KeyError):
        rs.remove(a)
    rs.discard(a)  # not a member: nothing happens
    members = rs.results
    rs.clear()
    assert len(rs) == 0 and members is rs.results
    assert isinstance(GroupResult("g", []), ResultSet)  # GroupResult is a ResultSet, as in Celery


def test_result_set_failure_propagates_the_members_error(wk: SimpleNamespace) -> None:
    rs = ResultSet([wk.add.delay(1, 1), wk.decline.delay()])
    with pytest.raises(Declined):
        rs.get(timeout=5)
    values = rs.join(timeout=5, propagate=False)
    assert values[0] == 2 and isinstance(values[1], Declined)
    assert rs.failed() and not rs.successful() and rs.completed_count() == 1
    with pytest.raises(Declined):
        rs.maybe_throw()
    with pytest.raises(TimeoutError):
        ResultSet([wk.slow.delay(1)]).get(timeout=0.05)


def test_chord_get_raises_the_header_tasks_error(wk: SimpleNamespace) -> None:
    r = chord([wk.add.s(1, 1), wk.decline.s()], wk.ident.s()).delay()
    with pytest.raises(Declined):  # Celery: the header member's own exception
        r.get(timeout=5)
    with pytest.raises(ChordError):  # the body's stored result, read without the parent
        AsyncResult(r.id, app=wk.app).get(timeout=5)
    with pytest.raises(ChordError):
        r.get(timeout=5, follow_parents=False)
    assert isinstance(r.result, ChordError) and r.state == states.FAILURE
    values = r.get(timeout=5, propagate=False)  # no propagation: the body's own outcome
    assert isinstance(values, ChordError)


def test_chain_get_raises_the_failed_steps_error(wk: SimpleNamespace) -> None:
    r = (wk.add.s(1, 1) | wk.decline.s() | wk.add.s(1)).delay()
    with pytest.raises(Declined):
        r.get(timeout=5)
    assert r.parent.parent.get(timeout=5) == 2


def test_group_shapes_match_celery(wk: SimpleNamespace) -> None:
    nested = group(group(wk.add.s(1, 1), wk.add.s(2, 2)), wk.add.s(3, 3)).delay()
    assert isinstance(nested, GroupResult)
    inner = nested.results[0]
    assert isinstance(inner, GroupResult) and [type(x) for x in inner.results] == [AsyncResult, AsyncResult]
    assert nested.get(timeout=5) == [[2, 4], 6]
    r = chain(wk.add.s(1, 1), group(wk.add.s(1), wk.add.s(2))).delay()
    assert isinstance(r, GroupResult) and r.get(timeout=5) == [3, 4]
    assert isinstance(r.parent, AsyncResult) and r.parent.get(timeout=5) == 2
    failing = group(group(wk.add.s(1, 1), wk.decline.s()), wk.add.s(3, 3)).delay()
    with pytest.raises(Declined):
        failing.get(timeout=5)
    values = failing.join(timeout=5, propagate=False)
    assert values[0][0] == 2 and isinstance(values[0][1], Declined) and values[1] == 6
    in_header = chord([group(wk.add.s(1, 1), wk.add.s(2, 2)), wk.add.s(3, 3)], wk.ident.s()).delay()
    assert in_header.get(timeout=5) == [[2, 4], 6]


def test_ignored_result_get_returns_none_at_once(wk: SimpleNamespace) -> None:
    r = wk.quiet.delay()
    assert r.ignored
    started = time.monotonic()
    assert r.get() is None  # no timeout given, and still no wait (Celery's behaviour)
    assert time.monotonic() - started < 0.5
    per_call = wk.add.apply_async((1, 1), ignore_result=True)
    assert per_call.ignored and per_call.get() is None
    assert not wk.add.delay(1, 1).ignored
    fresh = AsyncResult(r.id, app=wk.app)  # a handle from the id alone cannot know
    assert not fresh.ignored
    with pytest.raises(TimeoutError):
        fresh.get(timeout=0.2)


def test_async_result_extras(wk: SimpleNamespace) -> None:
    with pytest.raises(ValueError):
        AsyncResult(None, app=wk.app)  # type: ignore[arg-type]
    r = (wk.add.s(1, 1) | wk.add.s(1)).delay()
    assert r.get(timeout=5) == 3
    assert r.exists() and not AsyncResult("unknown", app=wk.app).exists()
    assert r.as_list() == [r.id, r.parent.id]
    assert r.as_tuple() == ((r.id, ((r.parent.id, None), None)), None)
    assert r.maybe_throw() == 3
    back = result_from_tuple(r.as_tuple(), app=wk.app)
    assert back.id == r.id and back.parent is not None and back.parent.id == r.parent.id
    gr = group(wk.add.s(1, 1), wk.add.s(2, 2)).delay()
    gback = result_from_tuple(gr.as_tuple(), app=wk.app)
    assert isinstance(gback, GroupResult) and gback == gr and gback.get(timeout=5) == [2, 4]
    parent_id = r.parent.id
    r.forget()  # forgets the parents it knows, as in Celery
    assert AsyncResult(parent_id, app=wk.app).state == states.PENDING


def test_group_state_reads_pending_members_in_one_batch() -> None:
    name = uuid.uuid4().hex
    app = Celeriac("batch", broker=f"memory://{name}", backend=f"memory://{name}", set_as_current=False)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    gr = group(add.s(i, i) for i in range(50)).delay()  # no worker: all stay PENDING
    reads = {"get": 0, "get_many": 0}
    store = app.backend
    get, get_many = store.get, store.get_many

    def counted_get(task_id: str) -> Any:
        reads["get"] += 1
        return get(task_id)

    def counted_get_many(ids: Any) -> Any:
        reads["get_many"] += 1
        return get_many(ids)

    store.get, store.get_many = counted_get, counted_get_many  # type: ignore[method-assign]
    assert not gr.ready() and gr.waiting() and gr.completed_count() == 0
    gr.maybe_throw()
    with pytest.raises(TimeoutError):
        gr.get(timeout=0.2)
    assert reads["get"] <= 5, reads  # the wait follows one member; states are read in batches
    assert reads["get_many"] <= 10, reads


def test_revoking_a_chord_reaches_the_tasks_of_a_nested_group() -> None:
    name = uuid.uuid4().hex
    app = Celeriac("rv", broker=f"memory://{name}", backend=f"memory://{name}", set_as_current=False)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def tsum(xs: list[int]) -> int:
        return sum(xs)

    r = chord([group(add.s(1, 1), add.s(2, 2)), add.s(3, 3)], tsum.s()).delay()  # no worker
    inner = r.parent.results[0]
    assert isinstance(inner, GroupResult)
    r.revoke()
    revoked = {task_id for task_id, _signal in app.backend.revoked_since(0)[0]}
    assert {x.id for x in inner.results} | {r.parent.results[1].id, r.id} <= revoked


def test_results_pickle_without_their_app(wk: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    import celeriac.app as app_module
    r = (wk.add.s(1, 1) | wk.add.s(1)).delay()
    gr = group(group(wk.add.s(1, 1), wk.add.s(2, 2)), wk.add.s(3, 3)).delay()
    rs = ResultSet([wk.add.delay(4, 4)])
    monkeypatch.setattr(app_module._state, "app", wk.app, raising=False)  # unpickled: bound to the current app
    back = pickle.loads(pickle.dumps(r))
    assert back == r and back.parent == r.parent and back.get(timeout=5) == 3
    gback = pickle.loads(pickle.dumps(gr))
    assert gback == gr and isinstance(gback.results[0], GroupResult) and gback.get(timeout=5) == [[2, 4], 6]
    assert pickle.loads(pickle.dumps(rs)).get(timeout=5) == [8]
    eager = wk.add.apply((2, 2))
    assert pickle.loads(pickle.dumps(eager)).get() == 4
