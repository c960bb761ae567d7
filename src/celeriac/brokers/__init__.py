"""Broker implementations, chosen by URL scheme."""

from __future__ import annotations

from typing import Any

from .base import Broker, DeadLetter, Delivery, Outgoing, implementation_for, safe_url

# scheme -> "module:Class"; a new broker is one file plus one line here.
BROKERS = {
    "memory": "celeriac.brokers.memory:MemoryBroker",
    "sqlite": "celeriac.brokers.sqlite:SQLiteBroker",
    "redis": "celeriac.brokers.redis:RedisBroker",
    "rediss": "celeriac.brokers.redis:RedisBroker",
    "unix": "celeriac.brokers.redis:RedisBroker",
    "redis+cluster": "celeriac.brokers.redis:RedisBroker",
    "rediss+cluster": "celeriac.brokers.redis:RedisBroker",
    "sentinel": "celeriac.brokers.redis:RedisBroker",
    "amqp": "celeriac.brokers.amqp:AMQPBroker",
    "amqps": "celeriac.brokers.amqp:AMQPBroker",
    "pyamqp": "celeriac.brokers.amqp:AMQPBroker",
    "postgresql": "celeriac.brokers.postgres:PostgresBroker",
    "postgres": "celeriac.brokers.postgres:PostgresBroker",
}


def create_broker(url: str, options: dict[str, Any] | None = None) -> Broker:
    cls = implementation_for(url, BROKERS, "broker URL", "or no URL for the embedded SQLite file")
    broker: Broker = cls(url, options)
    return broker


__all__ = ["Broker", "DeadLetter", "Delivery", "Outgoing", "create_broker", "safe_url"]
