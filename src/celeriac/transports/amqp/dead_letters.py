"""Reading and requeueing RabbitMQ's dead letters: the messages a worker moved to the
dead-letter queue (with its reason and delivery count) and those RabbitMQ dead-lettered itself
(a quorum queue's delivery limit, told by x-death). Mixed into AMQPBroker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

from ...brokers.base import DeadLetter, Outgoing
from .wire import DEAD_QUEUE, REDELIVERIES, SharedQueues, task_headers as _task_headers

if TYPE_CHECKING:
    from .broker import _Link

T = TypeVar("T")

DEAD_TYPE = "application/x-celeriac-packed"  # a dead letter moved by a worker, with its reason


class DeadLetters:
    """The dead-letter half of AMQPBroker, which provides what is declared here."""

    if TYPE_CHECKING:
        wire: SharedQueues

        def _declare(self, link: _Link, queue: str) -> None: ...

        def _guard(self, what: str, fn: Callable[[_Link], T]) -> T: ...

        def _publish_confirmed(self, link: _Link, message: Outgoing) -> None: ...

        @staticmethod
        def _packed(headers: dict[str, Any], props: Any, body: bytes, exchange: str, routing_key: str) -> bytes: ...

    def _drain_dead(self, link: _Link, limit: int | None) -> list[tuple[Any, Any, bytes]]:
        self._declare(link, DEAD_QUEUE)
        got: list[tuple[Any, Any, bytes]] = []
        while limit is None or len(got) < limit:
            method, props, body = link.confirm.basic_get(DEAD_QUEUE, auto_ack=False)
            if method is None:
                break
            got.append((method, props, body))
        return got

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        def read(link: _Link) -> list[DeadLetter]:
            got = self._drain_dead(link, limit)
            out = [self._dead_letter_of(props, body) for _method, props, body in got]
            if got:
                link.confirm.basic_nack(got[-1][0].delivery_tag, multiple=True, requeue=True)
            return list(reversed(out))

        return self._guard("read dead letters", read)

    def _dead_letter_of(self, props: Any, body: bytes) -> DeadLetter:
        headers = props.headers or {}
        if props.content_type == DEAD_TYPE:  # moved here by a worker (AMQPBroker.dead_letter)
            return DeadLetter(str(props.message_id), str(headers.get("x-celeriac-queue", "")), body,
                              str(headers.get("x-celeriac-reason", "")), float(props.timestamp or 0),
                              int(headers.get("x-celeriac-deliveries") or 0))
        # Dead-lettered by RabbitMQ itself: a quorum queue's delivery limit. The task message as it
        # was sent, with RabbitMQ's account of the trip in x-death.
        death = (headers.get("x-death") or [{}])[0]
        queue = self.wire.logical(_text(death.get("queue")))
        at = death.get("time")
        limit = self.wire.delivery_limit
        deliveries = (limit or 0) + 1 + int(headers.get(REDELIVERIES) or 0)
        reason = (f"delivered {deliveries} times without finishing (task_max_deliveries={limit}; dead-lettered by "
                  f"RabbitMQ's x-delivery-limit on quorum queue {queue!r}, the worker could not): it probably "
                  "kills its worker process") if _text(death.get("reason")) == "delivery_limit" else \
            f"dead-lettered by RabbitMQ ({_text(death.get('reason'))}) from queue {queue!r}"
        return DeadLetter(_dead_id(props), queue, self._packed(_task_headers(headers), props, body, "", queue),
                          reason, at.timestamp() if hasattr(at, "timestamp") else 0.0, deliveries)

    def requeue_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        def requeue(link: _Link) -> int:
            got = self._drain_dead(link, None)
            moved = 0
            for method, props, body in got:
                if ids is None or _dead_id(props) in ids:
                    letter = self._dead_letter_of(props, body)
                    self._publish_confirmed(link, Outgoing(letter.queue or "celery", letter.payload,
                                                           int(props.priority or 0)))
                    link.confirm.basic_ack(method.delivery_tag)
                    moved += 1
                else:
                    link.confirm.basic_nack(method.delivery_tag, requeue=True)
            return moved

        return self._guard("requeue dead letters", requeue)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _dead_id(props: Any) -> str:
    """A dead letter's id: the one a worker gave it, or (dead-lettered by RabbitMQ) its task id."""
    return str(props.message_id or _text((props.headers or {}).get("id")))
