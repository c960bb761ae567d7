"""One message on its way through a pool slot, and the request its task sees."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import protocol, unique
from ..brokers import Delivery
from ..task import Context, Task
from . import rejection

# Header keys that are the protocol's own: `request.headers` shows the others (Celery's meaning).
_NOT_CUSTOM = protocol.CORE_HEADERS | {"compression", rejection.REDELIVERED_HEADER, protocol.SENT_HEADER}
UNIQUE_HEADER = unique.UNIQUE_HEADER


@dataclass(slots=True)
class Job:
    """What the worker knows of a message so far: each decoding step fills in a little more
    (the message, then its task, then the request); a step that ends it early leaves the rest
    unset, and the ending it returns only uses what is there."""

    delivery: Delivery
    msg: protocol.TaskMessage | None = None
    task_id: str = ""
    name: str = ""
    task: Task[Any, Any] | None = None
    request: Context | None = None


def request_for(msg: protocol.TaskMessage, delivery: Delivery, args: tuple[Any, ...], kwargs: dict[str, Any],
                embed: dict[str, Any], hostname: str) -> Context:
    """The task's `self.request`, from the message's headers and properties (Celery's fields)."""
    headers = msg.headers
    task_id = str(headers["id"])
    return Context(
        id=task_id, task=str(headers["task"]), args=args, kwargs=kwargs, retries=int(headers.get("retries") or 0),
        is_eager=False, called_directly=False, eta=headers.get("eta"), expires=headers.get("expires"),
        hostname=hostname, root_id=headers.get("root_id"), parent_id=headers.get("parent_id"),
        group=headers.get("group"), group_index=headers.get("group_index"),
        correlation_id=msg.properties.get("correlation_id", task_id),
        reply_to=msg.properties.get("reply_to"), origin=headers.get("origin"), shadow=headers.get("shadow"),
        timelimit=tuple(headers.get("timelimit") or (None, None)),
        callbacks=embed.get("callbacks"), errbacks=embed.get("errbacks"), chain=embed.get("chain"),
        chord=embed.get("chord"), ignore_result=bool(headers.get("ignore_result")),
        delivery_info={"routing_key": delivery.queue, "priority": delivery.priority,
                       "redelivered": delivery.deliveries > 1 or bool(headers.get(rejection.REDELIVERED_HEADER)),
                       "exchange": ""},
        headers={k: v for k, v in headers.items() if k not in _NOT_CUSTOM} or None,
        properties=msg.properties, replaced_task_nesting=int(headers.get("replaced_task_nesting") or 0),
        stamped_headers=headers.get("stamped_headers"), stamps=headers.get("stamps"),
        argsrepr=headers.get("argsrepr"), kwargsrepr=headers.get("kwargsrepr"))
