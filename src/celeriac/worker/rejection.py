"""Reject raised by a task, as Celery has it.

`Reject(requeue=True)`: the message is delivered again (to any worker) and that delivery's
`request.delivery_info["redelivered"]` is True. `Reject(requeue=False)`: the task never runs
again, so it ends FAILURE with the Reject as its result (task_failure, errbacks and chords as
for any failure); celeriac also keeps the message in its dead-letter queue with the reason.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .. import protocol, signals, states
from ..brokers import Delivery, Outgoing
from ..exceptions import DecodeError
from ..task import Context, Task
from . import workflow
from .execute import exception_info

if TYPE_CHECKING:
    from .consumer import Batch, Consumer

logger = logging.getLogger("celeriac.worker")

# Set on the copy of a message that its task gave back with Reject(requeue=True): the next
# delivery says `redelivered`, as RabbitMQ's own requeue would.
REDELIVERED_HEADER = "celeriac_redelivered"


def requeue(consumer: "Consumer", task: Task[Any, Any], request: Context, delivery: Delivery,
            reject: BaseException, batch: "Batch") -> None:
    """Reject(requeue=True): the message is delivered again (to any worker), marked redelivered.
    A copy goes back and this delivery is acked, so the broker's crash count stays untouched."""
    logger.warning("Task %s[%s] rejected its message with requeue=True; it will be delivered again",
                   task.name, request.id)
    try:
        msg = protocol.unpack(delivery.payload)
        msg.headers[REDELIVERED_HEADER] = True
        payload = protocol.pack(msg)
    except DecodeError:
        payload = delivery.payload
    batch.publishes.append(Outgoing(delivery.queue, payload, delivery.priority))
    batch.acks.append(delivery)
    if signals.task_rejected.receivers:
        signals.task_rejected.send(sender=task, message=delivery, exc=reject)
    batch.mark()


def for_good(consumer: "Consumer", task: Task[Any, Any], request: Context, delivery: Delivery,
             reject: BaseException, batch: "Batch", ignore: bool) -> None:
    """Reject(requeue=False): the task never runs again, so it ends FAILURE with the Reject as its
    result (task_failure and errbacks as for any failure, as in Celery), and its message is kept
    in the dead-letter queue with the reason, where it can be looked at or requeued."""
    reason = getattr(reject, "reason", None)
    logger.error("Task %s[%s] rejected its message (requeue=False): %s; state FAILURE, message kept in the "
                 "dead-letter queue", task.name, request.id, reason)
    batch.dead.append((delivery, f"rejected by the task: {reason if reason is not None else reject}"))
    einfo = exception_info(reject)
    record = None
    if not ignore or task.store_errors_even_if_ignored:
        record = consumer._store(batch, str(request.id), states.FAILURE, reject, request=request, task=task,
                                 traceback=einfo.traceback)
    if signals.task_failure.receivers:
        signals.task_failure.send(sender=task, task_id=request.id, exception=reject, args=request.args,
                                  kwargs=request.kwargs, traceback=einfo.tb, einfo=einfo)
    if signals.task_rejected.receivers:
        signals.task_rejected.send(sender=task, message=delivery, exc=reject)
    if workflow.in_workflow(request):
        workflow.after_failure(consumer.app, request, states.FAILURE, reject, einfo.traceback, batch.publishes,
                               consumer._storer(batch), batch.chord_parts)
        part = workflow.chord_part(consumer.app, request, record, states.FAILURE, reject, einfo.traceback,
                                   consumer.hostname)
        if part is not None:
            batch.chord_parts.append(part)
    batch.mark()
