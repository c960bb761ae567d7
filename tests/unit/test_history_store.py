"""The task history contract, on every result store (memory, SQLite, Redis)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

from celeriac import history
from celeriac.history import HistoryBuffer, HistoryQuery, TaskRecord

from helpers import wait_until


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


def test_search_text_with_quotes_backslashes_and_non_ascii(any_store: Any) -> None:
    _record(any_store, "q", "SUCCESS", args='[["say \\"hi\\" to café\\\\bar"],{}]')
    _record(any_store, "other", "SUCCESS", args='[["hi to cafe"],{}]')
    ids = lambda text: [r.task_id for r in any_store.task_history(HistoryQuery(search=text))]  # noqa: E731
    assert ids('\\"hi\\" to café\\\\b') == ["q"]  # as the arguments' JSON text has them
    assert ids("café") == ["q"]
    assert ids('hi" to') == []


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


def test_one_batch_keeps_each_tasks_records_in_order(any_store: Any) -> None:
    # The SQLite store writes a batch in task id order: a task's later record must still win.
    now = time.time()
    batch = []
    for task_id, state, updated in (("m", "STARTED", now - 2), ("a", "SUCCESS", now - 3), ("m", "RETRY", now - 1)):
        stored = any_store.encode({"task_id": task_id, "status": state, "result": None, "children": []})
        stored.history = TaskRecord(task_id, "t.add", state, updated=updated, args="[[],{}]", meta=stored.data)
        batch.append(stored)
    any_store.store(batch)
    record = any_store.task_record("m")
    assert record is not None and record.state == "RETRY" and record.updated == now - 1
    assert [r.task_id for r in any_store.task_history(HistoryQuery())] == ["m", "a"]


def _search_steps(store: Any, query: HistoryQuery, scan: int) -> list[list[str]]:
    """A search, step after step (each following the last one's `older`), as the dashboard goes."""
    steps, until = [], query.until
    while True:
        page = store.search_history(replace(query, until=until), scan=scan)
        steps.append([r.task_id for r in page.records])
        if page.older is None:
            return steps
        assert until is None or page.older < until  # every step goes further back
        until = page.older


def test_a_search_goes_through_the_history_in_bounded_steps(any_store: Any) -> None:
    now = time.time()
    for i in range(7):  # t6 newest; "k0" in t0, t3, t6; FAILURE for the even ones
        _record(any_store, f"t{i}", "FAILURE" if i % 2 == 0 else "SUCCESS", updated=now - 10 + i,
                args=f'[["k{i % 3}"],{{}}]')
    # Three index entries per step; the last one's instant goes with the next step.
    assert _search_steps(any_store, HistoryQuery(search="k0"), 3) == [["t6"], ["t3"], [], ["t0"]]
    assert _search_steps(any_store, HistoryQuery(search="k0", state="FAILURE"), 3) == [["t6"], ["t0"]]
    assert _search_steps(any_store, HistoryQuery(search="k0", until=now - 5), 3) == [["t3"], [], ["t0"]]
    assert _search_steps(any_store, HistoryQuery(search="t5"), 100) == [["t5"]]  # by task id too, one step
    assert _search_steps(any_store, HistoryQuery(search="k0", limit=1), 3) == [["t6"], ["t3"], [], ["t0"]]


def test_a_search_step_loses_no_task_that_shares_its_edge_instant(any_store: Any) -> None:
    now = time.time()
    for i in range(3):
        _record(any_store, f"old{i}", "SUCCESS", updated=now - 10 + i)
    for name in ("x", "y", "z"):  # finished in the same instant
        _record(any_store, name, "SUCCESS", updated=now - 1)
    steps = _search_steps(any_store, HistoryQuery(search="[["), 2)
    found = [task_id for step in steps for task_id in step]
    assert sorted(found[:3]) == ["x", "y", "z"] and found[3:] == ["old2", "old1", "old0"]


def test_history_buffer_writes_on_its_own_thread_and_retries() -> None:
    written: list[tuple[list[str], str]] = []
    failures: list[Exception] = []

    def write(records: list[TaskRecord]) -> None:
        if failures:
            raise failures.pop()
        written.append(([r.task_id for r in records], threading.current_thread().name))

    buffer = HistoryBuffer(write)
    full = [TaskRecord(f"t{i}", "t.add", "SUCCESS") for i in range(history.FLUSH_SIZE)]
    buffer.add(full)  # a full buffer wakes the writing thread: the worker's thread does not write
    wait_until(lambda: written, timeout=10, message="the history thread to write a full buffer")
    assert written == [([r.task_id for r in full], "celeriac-history")]
    failures.append(RuntimeError("store away"))
    buffer.add([TaskRecord("late1", "t.add", "SUCCESS"), TaskRecord("late2", "t.add", "SUCCESS")])
    wait_until(lambda: len(written) == 2, timeout=10, message="the failed write to be tried again")
    assert written[1] == (["late1", "late2"], "celeriac-history") and not failures
