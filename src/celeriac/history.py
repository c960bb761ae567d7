"""Task history: one durable record per task, written by the workers with their results.

The dashboard (and anyone else) reads it through the result store's history methods; it
therefore shows tasks that finished before the dashboard started and survives its restart.
A record travels with its result into the store, which collects records and writes them in
one batch every FLUSH_INTERVAL seconds from a thread of its own (one transaction or one
round trip for hundreds of tasks), so recording costs little; a worker killed with
SIGKILL may lose the records of its last FLUSH_INTERVAL (never a result). Retention is bounded by age
(`task_history_expires`, default 7 days) and by count (`task_history_max`, default 100,000
tasks); `task_history = False` turns recording off.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Callable

from . import protocol

if TYPE_CHECKING:
    from .task import Context

DEFAULT_EXPIRES = 7 * 86400.0
DEFAULT_MAX = 100_000
ARGS_TEXT_LIMIT = 64 * 1024  # arguments longer than this are kept as a truncated text
FLUSH_INTERVAL = 0.5  # seconds a record may wait to be written with others
# Records waiting that wake the writing thread before its interval is up. Big batches are
# what make the history cheap: the task id's index takes random inserts, and a batch of
# many dirties each of its pages once instead of once per record.
FLUSH_SIZE = 5000
BACKLOG_MOST = 4 * FLUSH_SIZE  # waiting records past which the worker writes them itself (the writer lags)
KEEP_UNWRITTEN = 20_000  # records kept for a later try while the store cannot be written

logger = logging.getLogger("celeriac.history")


@dataclass(slots=True)
class TaskRecord:
    """What the history knows about one task (the latest state it reached)."""

    task_id: str
    name: str | None
    state: str
    worker: str | None = None
    queue: str | None = None
    retries: int = 0
    parent_id: str | None = None
    root_id: str | None = None
    group_id: str | None = None
    received: float | None = None  # epoch seconds
    started: float | None = None
    finished: float | None = None
    runtime: float | None = None
    updated: float = 0.0  # when this record was last written: the history's order
    args: str = ""  # JSON text of [args, kwargs, ...] as the task received them (the message body)
    meta: bytes = b""  # the stored result meta (result or exception, traceback, children)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "meta"}


COLUMNS = tuple(f.name for f in fields(TaskRecord))
_SELECTED = ", ".join(COLUMNS)


@dataclass(slots=True)
class HistoryQuery:
    """A page of the history, newest first."""

    state: str | None = None
    name: str | None = None
    worker: str | None = None
    since: float | None = None  # updated at or after (epoch seconds)
    until: float | None = None  # updated before
    search: str | None = None  # part of the task id, or text in the arguments
    limit: int = 50
    offset: int = 0
    states: list[str] = field(default_factory=list)  # several states (any of them)

    def wanted_states(self) -> list[str]:
        return [*self.states, *([self.state] if self.state else [])]

    def matches(self, record: TaskRecord) -> bool:
        """The filter in Python, for stores that cannot run it server-side (memory, Redis search)."""
        wanted = self.wanted_states()
        if wanted and record.state not in wanted:
            return False
        if self.name and record.name != self.name:
            return False
        if self.worker and record.worker != self.worker:
            return False
        if self.since is not None and record.updated < self.since:
            return False
        if self.until is not None and record.updated >= self.until:
            return False
        return not self.search or self.search in record.task_id or self.search in record.args

    def sql(self, table: str, mark: str, one_of: Callable[[int], str], contains: str,
            columns: str = _SELECTED) -> tuple[str, list[Any]]:
        """The query as SQL on a history table with COLUMNS, newest first, and its parameters;
        `mark` is the driver's placeholder, `one_of(n)` a column test against n of them and
        `contains` a test that the second mark's text is inside the first column's, each in
        the database's own dialect. `columns`: what it selects (all of COLUMNS by default)."""
        where: list[str] = []
        params: list[Any] = []
        wanted = self.wanted_states()
        if wanted:
            where.append(f"state {one_of(len(wanted))}")
            params += wanted
        for column, value in (("name", self.name), ("worker", self.worker)):
            if value:
                where.append(f"{column} = {mark}")
                params.append(value)
        for test, moment in ((">=", self.since), ("<", self.until)):
            if moment is not None:
                where.append(f"updated {test} {mark}")
                params.append(moment)
        if self.search:
            where.append(f"({contains.format('task_id')} OR {contains.format('args')})")
            params += [self.search, self.search]
        sql = (f"SELECT {columns} FROM {table}" + (f" WHERE {' AND '.join(where)}" if where else "")
               + f" ORDER BY updated DESC LIMIT {mark} OFFSET {mark}")
        return sql, [*params, self.limit, self.offset]


SEARCH_WINDOW = 20_000  # records a search looks through in one step, newest first


@dataclass(slots=True)
class SearchPage:
    """What one step of a search found, and where the next step goes on."""

    records: list[TaskRecord]
    older: float | None = None  # `until` for the next step; None: the search reached the oldest record


def search_step(page: Callable[[HistoryQuery], list[TaskRecord]], floor: Callable[[HistoryQuery, int], float | None],
                query: HistoryQuery, scan: int) -> SearchPage:
    """`query` (a search) among the `scan` newest records its other filters let through (from
    `query.until` down), so that a search of a big history is done in steps of bounded cost.
    `page` runs a HistoryQuery; `floor(q, scan)` gives the `updated` of the scan-th newest
    record q's filters let through without its search (None: fewer than that), or of the
    scan-th entry of whatever index the store walks for q."""
    edge = floor(query, scan)
    if edge is None:
        return SearchPage(page(query), None)
    # The records of the edge's instant all go to the next step: a step never splits an instant.
    above = math.nextafter(edge, math.inf)
    if query.until is not None and above >= query.until:  # `scan` records at one instant: step past it
        return SearchPage(page(replace(query, since=edge)), edge)
    return SearchPage(page(replace(query, since=above)), above)


def args_text(args: Any, kwargs: Any) -> str:
    """The arguments as JSON text (what the dashboard shows and searches)."""
    try:
        text = protocol._json_dumps([list(args or ()), dict(kwargs or {})]).decode("utf-8")
    except Exception:  # pickled arguments that JSON cannot show: their repr is the next best thing
        text = protocol._json_dumps([protocol._saferepr(args, 4096), protocol._saferepr(kwargs, 4096)]).decode()
    return text if len(text) <= ARGS_TEXT_LIMIT else text[:ARGS_TEXT_LIMIT] + "…"


def _args_of(request: "Context") -> str:
    """The JSON body as received ([args, kwargs, embed]: nothing to encode again), else the arguments."""
    body = request.body
    if body is not None and len(body) <= ARGS_TEXT_LIMIT:
        try:
            return bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            pass
    return args_text(request.args, request.kwargs)


def record_for(task_id: str, state: str, name: str | None, meta: bytes, request: "Context | None",
               hostname: str | None) -> TaskRecord:
    """The history record of an outcome the worker is about to store."""
    now = time.time()
    final = state in _FINAL
    if request is None:  # an outcome recorded for a task that never ran here (a workflow failed it)
        return TaskRecord(task_id, name, state, worker=hostname, finished=now if final else None,
                          updated=now, meta=meta)
    started = getattr(request, "started_at", None)
    return TaskRecord(
        task_id, name or request.task, state, worker=hostname or request.hostname,
        queue=(request.delivery_info or {}).get("routing_key"), retries=int(request.retries or 0),
        parent_id=request.parent_id, root_id=request.root_id, group_id=request.group,
        received=getattr(request, "received_at", None), started=started,
        finished=now if final else None, runtime=(now - started) if final and started else None,
        updated=now, args=_args_of(request), meta=meta)


_FINAL = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


def retention(conf: Any) -> tuple[float | None, int | None]:
    """(max age in seconds, max tasks) from the app's settings; None: unbounded."""
    expires = conf.get("task_history_expires", DEFAULT_EXPIRES)
    most = conf.get("task_history_max", DEFAULT_MAX)
    return (float(expires) if expires else None), (int(most) if most else None)


class HistoryBuffer:
    """Records waiting to be written together, by a thread of this process: every
    FLUSH_INTERVAL seconds, or sooner once FLUSH_SIZE are waiting. The worker's own thread
    only appends (it never waits for the write) unless the writer lags far behind.
    Readers in this process flush first."""

    def __init__(self, write: Callable[[list[TaskRecord]], None]) -> None:
        self._write = write
        self._pending: list[TaskRecord] = []
        self._lock = threading.Lock()  # the pending list
        self._writing = threading.Lock()  # one flush at a time: records go out in order
        self._wake = threading.Event()
        self._thread_pid = 0
        self._failing = False  # the last write failed: the thread retries, the worker does not wait

    def add(self, records: list[TaskRecord]) -> None:
        with self._lock:
            self._pending.extend(records)
            waiting = len(self._pending)
        if self._thread_pid != os.getpid():  # none yet, or the parent's (gone with the fork)
            self._thread_pid = os.getpid()
            threading.Thread(target=self._run, name="celeriac-history", daemon=True).start()
        if waiting >= BACKLOG_MOST and not self._failing:  # the store is slower than the tasks: hold the worker back
            self.flush()
        elif waiting >= FLUSH_SIZE:
            self._wake.set()

    def _run(self) -> None:
        pid = os.getpid()
        while self._thread_pid == pid:
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        with self._writing:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                self._write(batch)
                self._failing = False
            except Exception as exc:  # results are safe; the history waits for the store to answer
                self._failing = True
                with self._lock:
                    self._pending[:0] = batch[-KEEP_UNWRITTEN:]
                    dropped = len(batch) - min(len(batch), KEEP_UNWRITTEN)
                logger.warning("could not write %d task history record(s) (%s)%s; trying again", len(batch), exc,
                               f", {dropped} dropped" if dropped else "")
