"""The task history contract, on every result store (memory, SQLite, Redis)."""

from __future__ import annotations

import time
from typing import Any

from celeriac.history import HistoryQuery, TaskRecord


def _record(store: Any, task_id: str, state: str, *, name: str = "t.add", worker: str = "w1",
            updated: float | None = None, args: str = "[[1,2],{}]") -> None:
    meta = {"task_id": task_id, "status": state, "result": 3, "traceback": None, "children": []}
    stored = store.encode(meta)
    stored.history = TaskRecord(task_id, name, state, worker=worker, updated=updated or time.time(), args=args,
                                meta=stored.data, received=1.0, started=2.0)
    store.store([stored])


def test_history_lists_newest_first_with_filters(any_store: Any) -> None:
    now = time.time()
    _record(any_store, "a", "SUCCESS", updated=now - 3)
    _record(any_store, "b", "FAILURE", name="t.fail", updated=now - 2, args='[["<SCRIPT>"],{}]')
    _record(any_store, "c", "SUCCESS", worker="w2", updated=now - 1)
    ids = lambda **kw: [r.task_id for r in any_store.task_history(HistoryQuery(**kw))]  # noqa: E731
    assert ids() == ["c", "b", "a"]
    assert ids(state="SUCCESS") == ["c", "a"]
    assert ids(name="t.fail") == ["b"]
    assert ids(worker="w2") == ["c"]
    assert ids(search="<SCRIPT>") == ["b"]
    assert ids(search="c") == ["c"]
    assert ids(since=now - 2.5) == ["c", "b"]
    assert ids(until=now - 1.5) == ["b", "a"]
    assert ids(limit=1, offset=1) == ["b"]
    assert ids(state="SUCCESS", worker="w1") == ["a"]
    assert ids(states=["FAILURE", "SUCCESS"], limit=2) == ["c", "b"]


def test_one_record_and_final_state_wins(any_store: Any) -> None:
    _record(any_store, "x", "RETRY")
    _record(any_store, "x", "SUCCESS")
    _record(any_store, "x", "STARTED")  # late in-flight state: ignored
    record = any_store.task_record("x")
    assert record is not None and record.state == "SUCCESS"
    assert any_store.decode(record.meta)["result"] == 3
    assert record.args == "[[1,2],{}]" and record.worker == "w1" and record.received == 1.0
    assert any_store.task_record("missing") is None
    assert [r.task_id for r in any_store.task_history(HistoryQuery(state="RETRY"))] == []


def test_counts_per_name_and_state(any_store: Any) -> None:
    for i in range(3):
        _record(any_store, f"s{i}", "SUCCESS")
    _record(any_store, "f", "FAILURE", name="t.fail")
    counts = any_store.task_counts()
    assert counts[("t.add", "SUCCESS")] == 3
    assert counts[("t.fail", "FAILURE")] == 1


def test_trim_keeps_the_newest_within_count_and_age(any_store: Any) -> None:
    now = time.time()
    _record(any_store, "old", "SUCCESS", updated=now - 100)
    for i in range(5):
        _record(any_store, f"n{i}", "SUCCESS", updated=now - 10 + i)
    any_store.history_expires, any_store.history_max = 50.0, 3
    assert any_store.trim_history() == 3
    assert [r.task_id for r in any_store.task_history(HistoryQuery())] == ["n4", "n3", "n2"]
    assert [r.task_id for r in any_store.task_history(HistoryQuery(state="SUCCESS"))] == ["n4", "n3", "n2"]
    assert any_store.task_counts()[("t.add", "SUCCESS")] == 6  # counters never go back
