"""Task history for PostgreSQL: an indexed table beside the results (tables in
schema.py), written in batches by the result store's HistoryBuffer."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from typing import Any, Sequence

from ... import states
from ...history import COLUMNS, HistoryQuery, TaskRecord

_READY_SQL = ",".join(f"'{s}'" for s in states.READY_STATES)
_TYPES = {"retries": "int", "received": "float8", "started": "float8", "finished": "float8", "runtime": "float8",
          "updated": "float8", "meta": "bytea"}


def _insert(schema: str) -> str:
    # In binary (%b): psycopg builds a text array literal in Python, quoting element by element,
    # which cost a worker 3-4 times more CPU per record than the binary layout.
    arrays = ", ".join(f"%b::{_TYPES.get(c, 'text')}[]" for c in COLUMNS)
    keep = ("task_id", "received", "started", "args")
    return (
        f"INSERT INTO {schema}.history AS h ({', '.join(COLUMNS)}) SELECT * FROM unnest({arrays}) "
        "ON CONFLICT (task_id) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in keep)
        # what an in-flight record knew and a later one did not (a workflow's failure) is kept
        + ", received = coalesce(excluded.received, h.received), started = coalesce(excluded.started, h.started)"
        + ", args = CASE WHEN excluded.args = '' THEN h.args ELSE excluded.args END"
        + f" WHERE excluded.state IN ({_READY_SQL}) OR h.state NOT IN ({_READY_SQL})")


def write(conn: Any, schema: str, records: Sequence[TaskRecord]) -> None:
    """Record these outcomes (inside the caller's transaction) and count them."""
    latest: dict[str, TaskRecord] = {}  # one row per task in a statement (ON CONFLICT's rule)
    for r in records:  # ... the one the table's rule would keep: a final state wins
        kept = latest.get(r.task_id)
        if kept is None or r.state in states.READY_STATES or kept.state not in states.READY_STATES:
            latest[r.task_id] = r
    rows = sorted(latest.values(), key=lambda r: r.task_id)
    conn.execute(_insert(schema), tuple([getattr(r, c) for r in rows] for c in COLUMNS))
    counts = Counter((r.name or "", r.state) for r in records)
    keys = sorted(counts)
    conn.execute(
        f"INSERT INTO {schema}.history_counts AS hc (name, state, n) "
        "SELECT * FROM unnest(%b::text[], %b::text[], %b::bigint[]) "
        "ON CONFLICT (name, state) DO UPDATE SET n = hc.n + excluded.n",
        ([k[0] for k in keys], [k[1] for k in keys], [counts[k] for k in keys]))


def _row(row: Sequence[Any]) -> TaskRecord:
    record = TaskRecord(*row)
    record.meta = bytes(record.meta or b"")
    return record


def query(conn: Any, schema: str, q: HistoryQuery) -> list[TaskRecord]:
    sql, params = q.sql(f"{schema}.history", "%s", lambda n: f"IN ({', '.join(['%s'] * n)})", "strpos({}, %s) > 0")
    return [_row(r) for r in conn.execute(sql, params).fetchall()]


def floor(conn: Any, schema: str, q: HistoryQuery, scan: int) -> float | None:
    """`updated` of the scan-th newest record q's filters (not its search) let through: read from an index."""
    sql, params = replace(q, search=None, limit=1, offset=scan - 1).sql(
        f"{schema}.history", "%s", lambda n: f"IN ({', '.join(['%s'] * n)})", "strpos({}, %s) > 0", "updated")
    row = conn.execute(sql, params).fetchone()
    return None if row is None else float(row[0])


def one(conn: Any, schema: str, task_id: str) -> TaskRecord | None:
    row = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM {schema}.history WHERE task_id = %s",
                       (task_id,)).fetchone()
    return None if row is None else _row(row)


def counts(conn: Any, schema: str) -> dict[tuple[str, str], int]:
    return {(str(n), str(s)): int(c) for n, s, c in conn.execute(
        f"SELECT name, state, n FROM {schema}.history_counts").fetchall()}


def trim(conn: Any, schema: str, max_age: float | None, max_tasks: int | None) -> int:
    gone = 0
    if max_age:
        gone += conn.execute(f"DELETE FROM {schema}.history WHERE updated < %s", (time.time() - max_age,)).rowcount
    if max_tasks:
        row = conn.execute(f"SELECT updated FROM {schema}.history ORDER BY updated DESC LIMIT 1 OFFSET %s",
                           (max_tasks,)).fetchone()
        if row is not None:
            gone += conn.execute(f"DELETE FROM {schema}.history WHERE updated <= %s", (row[0],)).rowcount
    return int(gone)
