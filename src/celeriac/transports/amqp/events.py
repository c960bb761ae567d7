"""RabbitMQ's event channel (broker.py): task and worker events through the
`celeriac.events` topic exchange, one message per flushed batch; each monitor reads its own
exclusive queue, bounded in bytes (RabbitMQ drops its oldest batches when a monitor falls
behind, and the batch numbers show the gap)."""

from __future__ import annotations

import collections
import os
import time
import uuid
from typing import TYPE_CHECKING, Any, Sequence

try:
    import pika
    import pika.exceptions
except ImportError:  # pragma: no cover - only without the amqp extra (AMQPBroker says so)
    pika = None

from ...exceptions import OperationalError
from ...brokers.base import EventChannel, EventSubscription, frame_events, unframe_events

if TYPE_CHECKING:
    from .broker import AMQPBroker, _Link

EVENT_EXCHANGE = "celeriac.events"
EVENT_TYPE = "application/x-celeriac-events"  # length-prefixed JSON events, as on Redis
EVENT_BYTES = 512          # a monitor's queue holds events_max_len events of about this size
EVENT_PREFETCH = 2         # batches on their way to a monitor beyond what its queue holds


class AMQPEventChannel(EventChannel):
    """Events through the `celeriac.events` topic exchange: a batch is one message (no
    publisher confirm: events may be lost, never waited for), routed by "events.<hostname>".
    Each message carries its sender's id, the number of its first event and its count, so a
    reader sees which events it never got."""

    def __init__(self, broker: AMQPBroker, max_len: int) -> None:
        self.broker = broker
        self.max_len = max(100, max_len)
        self.sender = uuid.uuid4().hex
        self.sent = 0
        self.since = 0  # ms: when this sender sent its first event
        self._pid = os.getpid()

    def send(self, events: Sequence[bytes]) -> None:
        if not events:
            return
        if self._pid != os.getpid():  # a forked pool process is a sender of its own
            self._pid, self.sender, self.sent = os.getpid(), uuid.uuid4().hex, 0
        if not self.sent:
            self.since = int(time.time() * 1000)
        framed = frame_events(events)
        props = pika.BasicProperties(content_type=EVENT_TYPE, delivery_mode=1, headers={
            "sender": self.sender, "since": self.since, "first": self.sent + 1, "count": len(events)})

        def publish(link: _Link) -> None:
            if link.events is None:
                link.events = link.conn.channel()
                link.events.exchange_declare(EVENT_EXCHANGE, exchange_type="topic", durable=True)
            link.events.basic_publish(EVENT_EXCHANGE, "events", framed, props)

        self.broker._guard("send events", publish)
        self.sent += len(events)

    def subscribe(self) -> EventSubscription:
        return AMQPEventSubscription(self)


class AMQPEventSubscription(EventSubscription):
    """A monitor's own queue on the events exchange: exclusive (gone with the monitor's
    connection), bounded in bytes, oldest batches dropped first. It has a connection of
    its own, so it can be made in one thread and read in another."""

    def __init__(self, channel: AMQPEventChannel) -> None:
        broker = channel.broker
        self.safe_url = broker.safe_url
        self.missed = 0
        self._next: dict[str, int] = {}  # sender -> the number of the event expected next
        self._got: collections.deque[bytes] = collections.deque()
        self.subscribed = int(time.time() * 1000)
        try:
            self.conn = pika.BlockingConnection(broker.params)
            self.ch = self.conn.channel()
            self.ch.exchange_declare(EVENT_EXCHANGE, exchange_type="topic", durable=True)
            declared = self.ch.queue_declare("", exclusive=True, auto_delete=True, arguments={
                "x-max-length-bytes": channel.max_len * EVENT_BYTES, "x-overflow": "drop-head"})
            self.queue = declared.method.queue
            self.ch.queue_bind(self.queue, EVENT_EXCHANGE, routing_key="#")
            # Few batches in flight: the rest wait in the queue, where its bound applies (with
            # auto-ack RabbitMQ would push everything into this socket's buffers at once).
            self.ch.basic_qos(prefetch_count=EVENT_PREFETCH)
            self.ch.basic_consume(self.queue, self._on_batch)
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise OperationalError(f"cannot subscribe to events on RabbitMQ at {self.safe_url}: {exc!r}") from exc

    def next_batch(self, timeout: float) -> list[bytes]:
        deadline = time.monotonic() + timeout
        try:
            self.conn.process_data_events(time_limit=0)  # what already arrived
            while not self._got and (remaining := deadline - time.monotonic()) > 0:
                self.conn.process_data_events(time_limit=min(remaining, 1.0))
            out = list(self._got)
            self._got.clear()
            return out
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise OperationalError(f"lost the connection to RabbitMQ at {self.safe_url} while reading "
                                   f"events: {exc!r}") from exc

    def _on_batch(self, ch: Any, method: Any, props: Any, body: bytes) -> None:
        self._got.extend(self._unpack(props, body))
        ch.basic_ack(method.delivery_tag)

    def _unpack(self, props: Any, body: bytes) -> list[bytes]:
        headers = props.headers or {}
        sender, first, count = headers.get("sender"), headers.get("first"), headers.get("count")
        if isinstance(sender, bytes):
            sender = sender.decode()
        if sender is not None and first is not None and count is not None:
            expected = self._next.get(str(sender))
            if expected is None and int(headers.get("since") or 0) >= self.subscribed:
                expected = 1  # a sender that started after we subscribed: we should have had all of it
            if expected is not None and int(first) > expected:
                self.missed += int(first) - expected
            self._next[str(sender)] = int(first) + int(count)
        return unframe_events(body)

    def close(self) -> None:
        try:
            if self.conn.is_open:
                self.conn.close()
        except Exception:  # a broken connection: it is gone either way
            pass
