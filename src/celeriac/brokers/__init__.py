"""Brokers: the interface (base.py); the implementations live in celeriac.transports, found by URL scheme."""

from __future__ import annotations

from typing import Any

from .. import transports
from .base import Broker, DeadLetter, Delivery, Outgoing, safe_url


def create_broker(url: str, options: dict[str, Any] | None = None) -> Broker:
    cls = transports.implementation(url, "broker", "broker URL", "or no URL for the embedded SQLite file")
    broker: Broker = cls(url, options)
    return broker


__all__ = ["Broker", "DeadLetter", "Delivery", "Outgoing", "create_broker", "safe_url"]
