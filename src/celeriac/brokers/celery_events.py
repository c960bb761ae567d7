"""Celery's event messages beside celeriac's, for queues shared with Celery (docs/celery-interop.md).

celeriac's events already carry Celery's fields (events.py); what differs is the road. Celery
publishes each event to its `celeryev` topic exchange with the routing key made from the type
("task-succeeded" -> "task.succeeded"); `celery events` and Flower bind a queue of their own
to it. A worker started with -E mirrors every batch there, so Celery's monitors see celeriac
workers and tasks during a migration. Mirroring is best effort, as Celery's events are: it
never fails or slows the batch celeriac's own monitors read.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from typing import Any, Callable, Sequence

from .base import EventChannel, EventSubscription

logger = logging.getLogger("celeriac.events")

EXCHANGE = "celeryev"
RECHECK = 5.0  # seconds between two looks for a Celery monitor on RabbitMQ

Mirror = Callable[[Sequence[bytes]], None]


class MirroredEventChannel(EventChannel):
    """celeriac's event channel, with each batch also handed to a mirror (Celery's road)."""

    def __init__(self, inner: EventChannel, mirror: Mirror) -> None:
        self.inner, self.mirror = inner, mirror
        self._warned = 0.0

    def send(self, events: Sequence[bytes]) -> None:
        self.inner.send(events)
        try:
            self.mirror(events)
        except Exception as exc:  # Celery's monitors miss this batch; celeriac's did not
            if time.monotonic() - self._warned > 60:
                self._warned = time.monotonic()
                logger.warning("events: cannot mirror events to Celery's monitors (%s); will keep trying", exc)

    def subscribe(self) -> EventSubscription:
        return self.inner.subscribe()


def routing_key(event: dict[str, Any]) -> str:
    return str(event.get("type", "")).replace("-", ".")


def redis_mirror(client: Any, kombu_prefix: str) -> Mirror:
    """On Redis, Celery makes `celeryev` a fanout exchange, which kombu carries by pub/sub: each
    event is PUBLISHed on "/<db>.celeryev/<routing key>", where monitors PSUBSCRIBE. Nobody
    listening costs one PUBLISH per event, answered by nobody."""
    db = int(client.connection_pool.connection_kwargs.get("db") or 0)
    base = f"{kombu_prefix}/{db}.{EXCHANGE}/"

    def send(events: Sequence[bytes]) -> None:
        pipe = client.pipeline(transaction=False)
        for raw in events:
            event = json.loads(raw)
            key = routing_key(event)
            pipe.publish(base + key, _envelope(raw, key, str(event.get("hostname", ""))))
        pipe.execute()

    return send


def _envelope(body: bytes, key: str, hostname: str) -> bytes:
    return json.dumps({
        "body": base64.b64encode(body).decode("ascii"), "content-encoding": "utf-8",
        "content-type": "application/json", "headers": {"hostname": hostname},
        "properties": {"delivery_mode": 1, "delivery_info": {"exchange": EXCHANGE, "routing_key": key},
                       "priority": 0, "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())},
    }).encode()


def amqp_mirror(broker: Any) -> Mirror:
    """Publish each event to Celery's `celeryev` exchange, once a Celery monitor has declared it.
    celeriac never declares it: Celery's declaration (its durability) stays the only one."""
    import pika
    import pika.exceptions
    state = {"checked": 0.0, "exists": False}

    def exists(link: Any) -> bool:
        probe = link.conn.channel()
        try:
            probe.exchange_declare(EXCHANGE, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return False
            raise
        probe.close()
        return True

    def send(events: Sequence[bytes]) -> None:
        now = time.monotonic()
        if now - state["checked"] > RECHECK:
            state["exists"], state["checked"] = broker._guard("look for Celery's event exchange", exists), now
        if not state["exists"]:
            return

        def publish(link: Any) -> None:
            channel = link.events or link.confirm  # the events channel celeriac's own batch just used
            for raw in events:
                event = json.loads(raw)
                props = pika.BasicProperties(content_type="application/json", content_encoding="utf-8",
                                             delivery_mode=1, headers={"hostname": str(event.get("hostname", ""))})
                channel.basic_publish(EXCHANGE, routing_key(event), raw, props)

        broker._guard("send events to Celery's monitors", publish)

    return send
