"""Reject raised by a task, as Celery has it.

`Reject(requeue=True)`: the message is delivered again (to any worker) and that delivery's
`request.delivery_info["redelivered"]` is True. `Reject(requeue=False)`: the task never runs
again, so it ends FAILURE with the Reject as its result (task_failure, errbacks and chords as
for any failure); celeriac also keeps the message in its dead-letter queue with the reason.
What the worker writes for each is in outcomes.py (`_rejected`).
"""

from __future__ import annotations

from .. import protocol
from ..brokers import Delivery, Outgoing
from ..exceptions import DecodeError

# Set on the copy of a message that its task gave back with Reject(requeue=True): the next
# delivery says `redelivered`, as RabbitMQ's own requeue would.
REDELIVERED_HEADER = "celeriac_redelivered"


def redelivered_copy(delivery: Delivery) -> Outgoing:
    """The message to publish again for Reject(requeue=True), marked redelivered."""
    try:
        msg = protocol.unpack(delivery.payload)
        msg.headers[REDELIVERED_HEADER] = True
        payload = protocol.pack(msg)
    except DecodeError:
        payload = delivery.payload
    return Outgoing(delivery.queue, payload, delivery.priority)
