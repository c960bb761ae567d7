"""What the dashboard shows, read from durable state: live workers, the task history, queues,
dead letters and beat's schedule. Plain Python (no web framework), one method per page.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .. import history, protocol, states
from ..exceptions import DecodeError
from ..history import HistoryQuery, TaskRecord

if TYPE_CHECKING:
    from ..app import Celeriac
    from .live import EventTracker

PAGE_SIZE = 50
SEARCH_BUDGET = 0.25  # seconds a search page reads the history before it answers with what it found


class DashboardData:
    def __init__(self, app: "Celeriac", tracker: "EventTracker | None" = None) -> None:
        self.app = app
        self.tracker = tracker

    # --- workers ---

    def workers(self) -> list[dict[str, Any]]:
        now = time.time()
        out = []
        for worker_id, info in self.app.control.live_workers().items():
            beat = info.get("heartbeat_at")
            out.append({"id": worker_id, "hostname": info.get("hostname", worker_id), "pid": info.get("pid"),
                        "pool": info.get("pool"), "concurrency": info.get("concurrency"),
                        "queues": list(info.get("queues") or []), "active": int(info.get("active") or 0),
                        "running": list(info.get("running") or []), "processed": int(info.get("processed") or 0),
                        "heartbeat_at": beat, "heartbeat_age": round(now - beat, 1) if beat else None})
        return sorted(out, key=lambda w: str(w["hostname"]))

    # --- tasks ---

    def tasks(self, query: HistoryQuery) -> list[dict[str, Any]]:
        return [self._summary(r) for r in self.app.backend.task_history(query)]

    def search(self, query: HistoryQuery) -> tuple[list[dict[str, Any]], float | None]:
        """A page of a search: the history read in steps, newest first, until the page is full
        or SEARCH_BUDGET is spent, so a search of a million records answers in bounded time.
        -> its rows and the `until` of the next page (None: the search reached the oldest record)."""
        deadline = time.monotonic() + SEARCH_BUDGET
        wanted = query.offset + query.limit
        found: list[TaskRecord] = []
        until = query.until
        while True:
            step = self.app.backend.search_history(replace(query, until=until, offset=0, limit=wanted - len(found)),
                                                  history.SEARCH_WINDOW)
            found += step.records
            if len(found) >= wanted:
                return [self._summary(r) for r in found[query.offset:wanted]], found[wanted - 1].updated
            until = step.older
            if until is None or time.monotonic() >= deadline:
                return [self._summary(r) for r in found[query.offset:]], until

    def _summary(self, record: TaskRecord) -> dict[str, Any]:
        row = record.as_dict()
        row["args"], row["kwargs"] = _split_args(record.args)
        return row

    def task(self, task_id: str) -> dict[str, Any] | None:
        record = self.app.backend.task_record(task_id)
        meta: dict[str, Any] | None = None
        if record is not None and record.meta:
            meta = self._decode(record.meta)
        if meta is None:
            meta = self.app.backend.get(task_id)  # a result without history (recorded before it, or off)
        events = self.tracker.timeline(task_id) if self.tracker is not None else []
        if record is None and meta is None:
            meta = self._running(task_id)  # not finished yet: what its worker's heartbeat says
            if meta is None and not events:
                return None
        meta = meta or {}
        if record is None:  # a result without a history record: every field the page shows, mostly empty
            record = TaskRecord(task_id, meta.get("name"), meta.get("status", states.PENDING),
                                worker=meta.get("worker"),
                                parent_id=meta.get("parent_id"), root_id=meta.get("root_id"),
                                retries=int(meta.get("retries") or 0))
        detail = self._summary(record)
        detail.update(_workflow_links(record.args))
        failed = detail["state"] in states.EXCEPTION_STATES
        detail.update(result=None if failed else meta.get("result"),
                      exception=_exception_text(meta.get("result")) if failed else None,
                      traceback=meta.get("traceback"), children=_child_ids(meta.get("children")),
                      date_done=meta.get("date_done"))
        detail["timeline"] = _timeline(record if record.updated else None, events)
        sent = [e.get("timestamp") for e in events if e.get("type") == "task-sent"]
        detail["sent"] = sent[0] if sent else None  # known when clients send task-sent events
        return detail

    def _running(self, task_id: str) -> dict[str, Any] | None:
        for worker in self.workers():
            for running in worker["running"]:
                if running.get("id") == task_id:
                    return {"name": running.get("name"), "status": states.STARTED, "worker": worker["hostname"]}
        return None

    def _decode(self, data: bytes) -> dict[str, Any] | None:
        try:
            return self.app.backend.decode(data)
        except Exception:  # a result the dashboard may not unpickle: shown as unknown, never executed
            return None

    def counts(self) -> dict[tuple[str, str], int]:
        return self.app.backend.task_counts()

    # --- queues and dead letters ---

    def queue_names(self) -> list[str]:
        names = set(self.app.control.known_queues())
        for worker in self.app.control.live_workers().values():
            names.update(worker.get("queues") or [])
        return sorted(names)

    def queues(self) -> list[dict[str, Any]]:
        names = self.queue_names()
        sizes = self.app.broker.queue_sizes(None)  # every queue the broker can list, and the known ones
        missing = [n for n in names if n not in sizes]
        if missing:
            sizes.update(self.app.broker.queue_sizes(missing))
        dead: dict[str, int] = {}
        for letter in self.app.broker.dead_letters(limit=10_000):
            dead[letter.queue] = dead.get(letter.queue, 0) + 1
        ages = _oldest_ages(self.app, [n for n, size in sizes.items() if size.get("ready")])
        out = []
        for name in sorted(set(sizes) | set(dead)):
            size = sizes.get(name, {})
            out.append({"name": name, "ready": size.get("ready", 0), "reserved": size.get("reserved", -1),
                        "delayed": size.get("delayed", -1), "dead": dead.get(name, 0),
                        "oldest_age": ages.get(name)})
        return out

    def dead_letters(self, limit: int = 200) -> list[dict[str, Any]]:
        out = []
        for letter in self.app.broker.dead_letters(limit=limit):
            row: dict[str, Any] = {"id": letter.id, "queue": letter.queue, "reason": letter.reason, "at": letter.at,
                                   "deliveries": letter.deliveries, "task_id": None, "name": None, "args": None}
            try:
                msg = protocol.unpack(letter.payload)
                row.update(task_id=msg.headers.get("id"), name=msg.headers.get("task"),
                           args=f"{msg.headers.get('argsrepr', '')} {msg.headers.get('kwargsrepr', '')}".strip())
            except DecodeError:
                row["name"] = "(cannot decode)"
            out.append(row)
        return out

    # --- periodic tasks ---

    def periodic(self) -> dict[str, Any]:
        from ..beat import Beat

        beat = Beat(self.app)
        lease = beat.store.lease_state()
        rows = [{k: v for k, v in row.items() if k != "options"} for row in beat.listing()]
        return {"name": beat.name, "timezone": str(beat.tz), "entries": rows,
                "leader": lease.holder if lease.expires_in > 0 else None,
                "lease_expires_in": max(0.0, lease.expires_in)}


def _workflow_links(text: str) -> dict[str, Any]:
    """The tasks this one leads to, from the embed of its message body [args, kwargs, embed]:
    the chord body it is a header of, and its link / link_error callbacks (ids, when set)."""
    try:
        embed = json.loads(text)[2] if text else None
    except (ValueError, IndexError, TypeError, KeyError):
        embed = None
    if not isinstance(embed, dict):
        return {"chord": None, "callbacks": [], "errbacks": []}

    def task_id(signature: Any) -> str | None:
        options = signature.get("options") if isinstance(signature, dict) else None
        found = options.get("task_id") if isinstance(options, dict) else None
        return found if isinstance(found, str) else None

    def ids(signatures: Any) -> list[str]:
        return [i for i in map(task_id, signatures if isinstance(signatures, list) else []) if i]

    return {"chord": task_id(embed.get("chord")), "callbacks": ids(embed.get("callbacks")),
            "errbacks": ids(embed.get("errbacks"))}


def _split_args(text: str) -> tuple[Any, Any]:
    if not text:
        return None, None
    try:
        value = json.loads(text)  # [args, kwargs] or the message body [args, kwargs, embed]
        return value[0], value[1]
    except (ValueError, IndexError, TypeError, KeyError):
        return text, None


def _exception_text(value: Any) -> str | None:
    if isinstance(value, dict) and "exc_type" in value:
        message = value.get("exc_message")
        if isinstance(message, (list, tuple)):
            message = ", ".join(str(m) for m in message)
        return f"{value.get('exc_type')}: {message}"
    return None if value is None else str(value)


def _child_ids(children: Any) -> list[str]:
    """Task ids in a result's children (nested [[id, parent], None] tuples or group entries)."""
    found: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, (list, tuple)) and item:
            head = item[0]
            if isinstance(head, str) and len(item) == 2:  # [task id, parent]
                found.append(head)
            elif (len(item) == 2 and isinstance(head, (list, tuple)) and head and isinstance(head[0], str)
                  and isinstance(item[1], (list, tuple))):  # a group [[group id, parent], [members]]: its tasks
                for sub in item[1]:
                    walk(sub)
            else:
                for sub in item:
                    walk(sub)
    for child in children or []:
        walk(child)
    return [c for c in found if len(c) >= 8]


def _timeline(record: TaskRecord | None, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The task's events (-E) when the dashboard saw them, else the times its history record holds."""
    if events:
        return [{"at": e.get("timestamp"), "event": e.get("type"), "worker": e.get("hostname"),
                 "detail": {k: v for k, v in e.items() if k in ("runtime", "exception", "retries", "result")}}
                for e in events]
    if record is None:
        return []
    steps = [("task-received", record.received), ("task-started", record.started),
             (f"task-{record.state.lower()}", record.finished or record.updated)]
    return [{"at": at, "event": kind, "worker": record.worker, "detail": {}} for kind, at in steps if at]


def _oldest_ages(app: "Celeriac", queues: list[str]) -> dict[str, float]:
    """Age of the oldest waiting message per queue, where the broker can tell."""
    now = time.time()
    return {q: max(0.0, now - at) for q, at in app.broker.oldest_waiting(queues).items()}
