"""Rate limits: "10/s", "100/m", "1000/h" per task, per worker (Celery's meaning) or global.

A task over its rate is not run and does not hold its pool slot: the worker reserves the
task's start time in the result store (one schedule per task name, and per worker in
"worker" scope) and puts the message back with that ETA, marked so that it runs without a
second reservation. Each waiting task is deferred once, to its own slot, so 200 waiting
tasks cost 200 reservations, not a storm of retries; other tasks on the worker carry on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import protocol
from ..brokers import Delivery, Outgoing
from ..rates import interval_of

if TYPE_CHECKING:
    from ..app import Celeriac
    from ..task import Task

RESERVED_HEADER = protocol.RATE_RESERVED_HEADER

__all__ = ["RESERVED_HEADER", "defer_if_limited", "interval_of"]


def defer_if_limited(app: "Celeriac", task: "Task[Any, Any]", msg: protocol.TaskMessage, delivery: Delivery,
                     worker_id: str) -> Outgoing | None:
    """The message to publish instead of running the task now, or None to run it now."""
    rate = task.rate_limit if task.rate_limit is not None else app.conf.task_default_rate_limit
    if not rate or msg.headers.get(RESERVED_HEADER):
        return None
    interval = interval_of(rate)
    if interval is None:
        return None
    scope = getattr(task, "rate_limit_scope", None) or app.conf.task_rate_limit_scope or "worker"
    key = task.name if scope == "global" else f"{task.name}@{worker_id}"
    delay = app.backend.reserve_rate_slot(key, interval)
    if delay < 0.001:
        return None
    import time
    from datetime import UTC, datetime
    eta = time.time() + delay
    headers = dict(msg.headers, eta=protocol.to_iso(datetime.fromtimestamp(eta, UTC)))
    headers[RESERVED_HEADER] = 1
    copy = protocol.TaskMessage(headers, msg.properties, msg.body, msg.content_type, msg.content_encoding)
    return Outgoing(delivery.queue, protocol.pack(copy), delivery.priority, eta)
