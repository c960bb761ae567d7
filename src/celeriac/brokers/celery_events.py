"""Celery's event messages beside celeriac's, for queues shared with Celery (docs/celery-interop.md).

celeriac's events already carry Celery's fields (events.py); what differs is the road. Celery
publishes each event to its `celeryev` topic exchange with the routing key made from the type
("task-succeeded" -> "task.succeeded"); `celery events` and Flower bind a queue of their own
to it. A worker started with -E mirrors every batch there, so Celery's monitors see celeriac
workers and tasks during a migration. Mirroring is best effort, as Celery's events are: it
never fails or slows the batch celeriac's own monitors read. Each transport brings its own mirror
(transports/<name>/celery_events.py); the channel that calls it is here.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

from .base import EventChannel, EventSubscription

logger = logging.getLogger("celeriac.events")

EXCHANGE = "celeryev"

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
