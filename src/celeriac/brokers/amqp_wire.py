"""RabbitMQ queues shared with Celery (`celery_wire_queues`, docs/celery-interop.md).

Celery declares its queues durable with no arguments, and RabbitMQ refuses a second
declaration with other arguments (PRECONDITION_FAILED). So a shared queue is used as it is
when it exists, and otherwise declared exactly as Celery declares it (with `x-max-priority`
only when `task_queue_max_priority` asks for it, as in Celery). celeriac's priorities 1-9 then
live in a priority queue beside it, `celeriac.priority.<queue>`, which only celeriac workers
consume; priority 0 - celeriac's default and everything Celery sends - stays on the shared
queue, where both kinds of worker take it.
"""

from __future__ import annotations

from typing import Any, Sequence

from .. import protocol

PRIORITY_QUEUE = "celeriac.priority.{}"


class SharedQueues:
    def __init__(self, options: dict[str, Any]) -> None:
        self.names = frozenset(options.get("celery_wire_queues") or ())
        self.max_priority = options.get("queue_max_priority")

    def __contains__(self, queue: str) -> bool:
        return queue in self.names

    def target(self, queue: str, priority: int) -> str:
        """The queue a message for `queue` with this priority goes to."""
        if priority > 0 and queue in self.names and not self.max_priority:
            return PRIORITY_QUEUE.format(queue)
        return queue

    @staticmethod
    def logical(queue: str) -> str:
        """The queue a message was sent to, whichever of its RabbitMQ queues it came from."""
        prefix = PRIORITY_QUEUE.format("")
        return queue[len(prefix):] if queue.startswith(prefix) else queue

    def consumed(self, queues: Sequence[str]) -> list[str]:
        """The RabbitMQ queues behind these queues (priority queues first)."""
        extra = [] if self.max_priority else [PRIORITY_QUEUE.format(q) for q in queues if q in self.names]
        return [*extra, *queues]

    def declare(self, conn: Any, channel: Any, queue: str) -> None:
        """Use the shared queue as it is if it exists (Celery made it, or an older celeriac with
        priorities), else declare it as Celery does - so Celery's own declaration, before or
        after ours, never clashes."""
        import pika.exceptions
        probe = conn.channel()
        try:
            probe.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            limit = self.max_priority
            channel.queue_declare(queue, durable=True, arguments={"x-max-priority": int(limit)} if limit else None)
        else:
            probe.close()


def eta_of(headers: dict[str, Any] | None) -> float | None:
    """The `eta` header as epoch seconds (a Celery client sends its countdown that way,
    straight to the queue); None when absent or not a date."""
    text = (headers or {}).get("eta")
    if isinstance(text, bytes):
        text = text.decode()
    try:
        return protocol.iso_to_epoch(text) if isinstance(text, str) else None
    except ValueError:
        return None
