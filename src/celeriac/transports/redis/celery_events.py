"""Celery's event messages on Redis: kombu's fanout over pub/sub (see brokers/celery_events.py)."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any, Sequence

from ...brokers.celery_events import EXCHANGE, Mirror, routing_key


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
