"""Task history for SQLite: an indexed table in a file beside the results' (celeriac.db ->
celeriac-history.db), written right after each batch of results."""

from __future__ import annotations

import operator
import os
import sqlite3
import time
from collections import Counter
from dataclasses import replace
from typing import Any, Sequence

from ... import states
from ...history import COLUMNS, HistoryQuery, TaskRecord

# Records are appended (rowid order); the task id's index takes the random inserts, with small
# entries. Three more indexes serve the dashboard's pages: time, and state and name by time.
# Filtering by worker scans the time index.
SCHEMA = """
CREATE TABLE IF NOT EXISTS celeriac_history (
    task_id TEXT NOT NULL UNIQUE,
    name TEXT,
    state TEXT NOT NULL,
    worker TEXT,
    queue TEXT,
    retries INTEGER NOT NULL DEFAULT 0,
    parent_id TEXT,
    root_id TEXT,
    group_id TEXT,
    received REAL,
    started REAL,
    finished REAL,
    runtime REAL,
    updated REAL NOT NULL,
    args TEXT NOT NULL DEFAULT '',
    meta BLOB NOT NULL DEFAULT x''
);
CREATE INDEX IF NOT EXISTS celeriac_history_updated ON celeriac_history(updated);
CREATE INDEX IF NOT EXISTS celeriac_history_state ON celeriac_history(state, updated);
CREATE INDEX IF NOT EXISTS celeriac_history_name ON celeriac_history(name, updated);
CREATE TABLE IF NOT EXISTS celeriac_history_counts (
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (name, state)
) WITHOUT ROWID
"""

_VALUES = operator.attrgetter(*COLUMNS)  # a record's row, in one C call
_TASK_ID = operator.attrgetter("task_id")
_READY_SQL = ",".join(f"'{s}'" for s in states.READY_STATES)
_INSERT = (
    f"INSERT INTO celeriac_history({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT(task_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in ("task_id", "received", "started", "args"))
    # what an in-flight record knew and a later one did not (a workflow's failure) is kept
    + ", received = COALESCE(excluded.received, received), started = COALESCE(excluded.started, started)"
    + ", args = CASE WHEN excluded.args = '' THEN args ELSE excluded.args END"
    + f" WHERE excluded.state IN ({_READY_SQL}) OR celeriac_history.state NOT IN ({_READY_SQL})")


def write(conn: sqlite3.Connection, records: Sequence[TaskRecord]) -> None:
    """Record these outcomes (inside the caller's transaction) and count them."""
    # In task id order (stable: a task's later record still comes after its earlier one), the
    # random inserts into the task id's index walk its pages once, front to back.
    conn.executemany(_INSERT, map(_VALUES, sorted(records, key=_TASK_ID)))
    counts = Counter((r.name or "", r.state) for r in records)
    conn.executemany(
        "INSERT INTO celeriac_history_counts(name, state, n) VALUES (?, ?, ?) "
        "ON CONFLICT(name, state) DO UPDATE SET n = n + excluded.n",
        [(name, state, n) for (name, state), n in counts.items()])


def path_beside(path: str) -> str:
    root, ext = os.path.splitext(path)
    return f"{root}-history{ext or '.db'}"


def _row(row: Sequence[Any]) -> TaskRecord:
    record = TaskRecord(*row)
    record.meta = bytes(record.meta or b"")
    return record


def query(conn: sqlite3.Connection, q: HistoryQuery) -> list[TaskRecord]:
    sql, params = q.sql("celeriac_history", "?", lambda n: f"IN ({','.join('?' * n)})", "instr({}, ?) > 0")
    return [_row(r) for r in conn.execute(sql, params)]


def floor(conn: sqlite3.Connection, q: HistoryQuery, scan: int) -> float | None:
    """`updated` of the scan-th newest record q's filters (not its search) let through: read from an index."""
    sql, params = replace(q, search=None, limit=1, offset=scan - 1).sql(
        "celeriac_history", "?", lambda n: f"IN ({','.join('?' * n)})", "instr({}, ?) > 0", "updated")
    row = conn.execute(sql, params).fetchone()
    return None if row is None else float(row[0])


def one(conn: sqlite3.Connection, task_id: str) -> TaskRecord | None:
    row = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM celeriac_history WHERE task_id = ?", (task_id,)).fetchone()
    return None if row is None else _row(row)


def counts(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    return {(str(n), str(s)): int(c) for n, s, c in conn.execute("SELECT name, state, n FROM celeriac_history_counts")}


def trim(conn: sqlite3.Connection, max_age: float | None, max_tasks: int | None) -> int:
    gone = 0
    if max_age:
        gone += conn.execute("DELETE FROM celeriac_history WHERE updated < ?", (time.time() - max_age,)).rowcount
    if max_tasks:
        row = conn.execute("SELECT updated FROM celeriac_history ORDER BY updated DESC LIMIT 1 OFFSET ?",
                           (max_tasks,)).fetchone()
        if row is not None:
            gone += conn.execute("DELETE FROM celeriac_history WHERE updated <= ?", (row[0],)).rowcount
    return int(gone)
