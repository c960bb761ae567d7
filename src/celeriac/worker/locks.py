"""Task locks: `@app.task(lock=True)` - never two runs of the task (or of one key) at once.

A run takes the lock in the result store (the same atomic hold as unique tasks) before it
starts. When another run holds it, the message goes back to the broker with a short delay
and is acked here: the wait happens in the broker, never in a pool slot. The lock is let go
of when the run ends - any final state or a retry - in the batch that records its outcome,
and it expires after `lock_timeout` seconds whatever happens (a worker killed with SIGKILL).
A run delivered again under the same task id (after such a crash) finds the lock its own.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .. import protocol
from ..brokers import Delivery, Outgoing

if TYPE_CHECKING:
    from ..app import Celeriac
    from ..task import Context, Task

LOCK_RETRY_DELAY = 0.5  # seconds before a locked-out message is delivered again
DEFAULT_LOCK_TIMEOUT = 3600.0


def lock_key(task: "Task[Any, Any]", args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """`lock=True`: one run of the task at a time; a string: one run per that key (shared by
    every task naming it); a function of (args, kwargs): one run per key it returns."""
    lock = task.lock
    if lock is None or lock is False:
        return None
    if lock is True:
        return f"lock:{task.name}"
    return f"lock:{lock(args, kwargs) if callable(lock) else lock}"


def defer_if_locked(app: "Celeriac", task: "Task[Any, Any]", msg: protocol.TaskMessage, delivery: Delivery,
                    request: "Context") -> Outgoing | None:
    """The message to publish instead of running now (another run holds the lock), or None:
    the lock is this run's, and `request.lock_key` says which to let go of when it ends."""
    key = lock_key(task, tuple(request.args or ()), dict(request.kwargs or {}))
    if key is None:
        return None
    task_id = str(request.id)
    timeout = float(task.lock_timeout or DEFAULT_LOCK_TIMEOUT)
    if app.backend.claim_unique(key, task_id, timeout) == task_id:
        request.lock_key = key
        return None
    eta = time.time() + LOCK_RETRY_DELAY
    headers = dict(msg.headers, eta=protocol.to_iso(datetime.fromtimestamp(eta, UTC)))
    copy = protocol.TaskMessage(headers, msg.properties, msg.body, msg.content_type, msg.content_encoding)
    return Outgoing(delivery.queue, protocol.pack(copy), delivery.priority, eta)
