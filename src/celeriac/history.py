"""Task history: one durable record per task, written by the workers with their results.

The dashboard (and anyone else) reads it through the result store's history methods; it
therefore shows tasks that finished before the dashboard started and survives its restart.
A record is written in the same store call as the task's result (one round trip or one
transaction per batch), so recording costs little. Retention is bounded by age
(`task_history_expires`, default 7 days) and by count (`task_history_max`, default 100,000
tasks); `task_history = False` turns recording off.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from . import protocol

if TYPE_CHECKING:
    from .task import Context

DEFAULT_EXPIRES = 7 * 86400.0
DEFAULT_MAX = 100_000
ARGS_TEXT_LIMIT = 64 * 1024  # arguments longer than this are kept as a truncated text


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
    args: str = ""  # JSON text of [args, kwargs] as the task received them
    meta: bytes = b""  # the stored result meta (result or exception, traceback, children)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "meta"}


COLUMNS = tuple(f.name for f in fields(TaskRecord))


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


def args_text(args: Any, kwargs: Any) -> str:
    """The arguments as JSON text (what the dashboard shows and searches)."""
    try:
        text = protocol._json_dumps([list(args or ()), dict(kwargs or {})]).decode("utf-8")
    except Exception:  # pickled arguments that JSON cannot show: their repr is the next best thing
        text = protocol._json_dumps([protocol._saferepr(args, 4096), protocol._saferepr(kwargs, 4096)]).decode()
    return text if len(text) <= ARGS_TEXT_LIMIT else text[:ARGS_TEXT_LIMIT] + "…"


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
        updated=now, args=args_text(request.args, request.kwargs), meta=meta)


_FINAL = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


def retention(conf: Any) -> tuple[float | None, int | None]:
    """(max age in seconds, max tasks) from the app's settings; None: unbounded."""
    expires = conf.get("task_history_expires", DEFAULT_EXPIRES)
    most = conf.get("task_history_max", DEFAULT_MAX)
    return (float(expires) if expires else None), (int(most) if most else None)
