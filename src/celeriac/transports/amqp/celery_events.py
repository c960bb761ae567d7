"""Celery's event messages on RabbitMQ: its `celeryev` exchange (see brokers/celery_events.py)."""

from __future__ import annotations

import json
import time
from typing import Any, Sequence

from ...brokers.celery_events import EXCHANGE, Mirror, routing_key

RECHECK = 5.0  # seconds between two looks for a Celery monitor on RabbitMQ


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
