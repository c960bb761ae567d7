"""The dashboard's actions; each returns a sentence a person reads (and the JSON API returns)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Sequence

from .. import states

if TYPE_CHECKING:
    from ..app import Celeriac


class ActionError(Exception):
    """The action cannot be done; the message says why and what to do instead."""


def retry(app: "Celeriac", task_id: str) -> dict[str, Any]:
    """Send a finished task again with its original arguments, as a new task linked to the old one."""
    record = app.backend.task_record(task_id)
    if record is None:
        raise ActionError(f"task {task_id} is not in the history (too old, or recorded before it was kept): "
                          "it cannot be retried from here")
    if record.state not in states.READY_STATES:
        raise ActionError(f"task {task_id} is {record.state}, not finished: retry it once it has finished")
    if not record.name:
        raise ActionError(f"task {task_id} has no recorded name: it cannot be sent again")
    try:
        args, kwargs = json.loads(record.args)[:2]
    except (ValueError, TypeError):
        raise ActionError(f"the arguments of task {task_id} were not kept as JSON: it cannot be sent again") from None
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise ActionError(f"the arguments of task {task_id} were kept as text only: it cannot be sent again")
    result = app.send_task(record.name, args, kwargs, queue=record.queue or None, parent_id=task_id,
                           root_id=record.root_id or task_id, headers={"retry_of": task_id})
    return {"ok": True, "task_id": result.id, "retry_of": task_id,
            "message": f"task {record.name}[{task_id}] sent again as {result.id}"}


def revoke(app: "Celeriac", task_id: str, terminate: bool, signal: str | None = None) -> dict[str, Any]:
    app.control.revoke(task_id, terminate=terminate, signal=signal if terminate else None)
    what = f"terminated with {signal or 'SIGTERM'}" if terminate else "revoked (it will not start)"
    return {"ok": True, "task_id": task_id, "message": f"task {task_id} {what}"}


def purge(app: "Celeriac", queue: str) -> dict[str, Any]:
    removed = app.broker.purge([queue])
    return {"ok": True, "queue": queue, "removed": removed,
            "message": f"purged {removed} waiting message(s) from queue {queue}"}


def requeue(app: "Celeriac", ids: Sequence[str] | None) -> dict[str, Any]:
    moved = app.broker.requeue_dead_letters(list(ids) if ids is not None else None)
    return {"ok": True, "requeued": moved, "message": f"requeued {moved} dead letter(s)"}


def rate_limit(app: "Celeriac", task_name: str, rate: str | None) -> dict[str, Any]:
    if not task_name:
        raise ActionError("name the task whose rate limit to set")
    try:
        replies = app.control.rate_limit(task_name, rate or None, reply=True, timeout=1.0)
    except ValueError as exc:
        raise ActionError(f"bad rate limit {rate!r}: {exc} (write it as 10/s, 100/m or 1000/h)") from None
    return {"ok": True, "task": task_name, "rate_limit": rate or None, "replies": replies,
            "message": f"rate limit of {task_name} set to {rate or 'none'} on {len(replies)} worker(s)"}
