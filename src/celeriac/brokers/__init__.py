"""Broker implementations, chosen by URL scheme."""

from __future__ import annotations

import importlib
from typing import Any

from ..exceptions import ImproperlyConfigured
from .base import Broker, DeadLetter, Delivery, Outgoing, safe_url

# scheme -> "module:Class"; a new broker is one file plus one line here.
BROKERS = {
    "memory": "celeriac.brokers.memory:MemoryBroker",
    "sqlite": "celeriac.brokers.sqlite:SQLiteBroker",
    "redis": "celeriac.brokers.redis:RedisBroker",
    "rediss": "celeriac.brokers.redis:RedisBroker",
    "unix": "celeriac.brokers.redis:RedisBroker",
    "amqp": "celeriac.brokers.amqp:AMQPBroker",
    "amqps": "celeriac.brokers.amqp:AMQPBroker",
    "pyamqp": "celeriac.brokers.amqp:AMQPBroker",
}


def create_broker(url: str, options: dict[str, Any] | None = None) -> Broker:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    target = BROKERS.get(scheme)
    if target is None:
        raise ImproperlyConfigured(
            f"unsupported broker URL {safe_url(url)!r}: supported schemes are "
            + ", ".join(f"{s}://" for s in BROKERS) + " (or no URL for the embedded SQLite file)")
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    broker: Broker = cls(url, options)
    return broker


__all__ = ["Broker", "DeadLetter", "Delivery", "Outgoing", "create_broker", "safe_url"]
