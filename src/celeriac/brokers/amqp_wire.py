"""RabbitMQ routing and wire format, independent of the client library: the blocking broker
(pika, brokers/amqp.py) and the asyncio client (aiormq, celeriac/aio/amqp.py) declare the
same queues and delay levels and publish the same messages through these functions.
"""

from __future__ import annotations

import decimal
import math
import time
from dataclasses import dataclass, field
from typing import Any

from .. import protocol
from ..exceptions import DecodeError
from .base import Outgoing

DELAY_EXCHANGE = "celeriac.delay.{}"
DELAY_QUEUE = "celeriac.delay.{}"
DELIVER_EXCHANGE = "celeriac.delay.deliver"
DELAY_LEVELS = 32          # 2**32 units: over 13 years at 100 ms
DELAY_UNIT = 0.1           # seconds per unit; delays are rounded up, never run early
REDELIVERIES = "x-celeriac-redeliveries"


@dataclass(frozen=True)
class Declare:
    """One declaration a publish needs: an exchange, a queue, or a binding (of queue or
    exchange `name` to exchange `source`)."""

    kind: str  # "exchange" | "queue" | "bind_queue" | "bind_exchange"
    name: str
    arguments: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    source: str = ""
    routing_key: str = ""
    exchange_type: str = "topic"

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.kind, self.name, self.source, self.routing_key


def queue_declaration(queue: str) -> Declare:
    """A task queue: durable, priorities 0-9."""
    return Declare("queue", queue, {"x-max-priority": 9})


def delay_declarations() -> list[Declare]:
    """The delay levels: queue L keeps a message 2**L units (TTL), then dead-letters it to
    level L-1 (level 0: to the deliver exchange); the bits of the routing key choose, at
    each level, whether the message waits there or skips on down."""
    out = [Declare("exchange", DELIVER_EXCHANGE)]
    out += [Declare("exchange", DELAY_EXCHANGE.format(level)) for level in range(DELAY_LEVELS)]
    for level in range(DELAY_LEVELS):
        lower = DELAY_EXCHANGE.format(level - 1) if level else DELIVER_EXCHANGE
        name, skip = DELAY_QUEUE.format(level), "*." * (DELAY_LEVELS - 1 - level)
        out += [Declare("queue", name, {"x-message-ttl": int((2 ** level) * DELAY_UNIT * 1000),
                                        "x-dead-letter-exchange": lower}),
                Declare("bind_queue", name, source=DELAY_EXCHANGE.format(level), routing_key=f"{skip}1.#"),
                Declare("bind_exchange", lower, source=DELAY_EXCHANGE.format(level), routing_key=f"{skip}0.#")]
    return out


def route_plan(message: Outgoing, now: float | None = None) -> tuple[list[Declare], str, str]:
    """What must exist before `message` is published, and its exchange and routing key:
    straight to its queue, or (with an ETA ahead) into the delay levels, steered by the bits
    of its delay in units of DELAY_UNIT (rounded up: never early)."""
    queue = message.queue
    needed = [queue_declaration(queue)]
    delay = (message.eta - (time.time() if now is None else now)) if message.eta else 0.0
    if delay <= 0:
        return needed, "", queue
    needed += delay_declarations()
    needed.append(Declare("bind_queue", queue, source=DELIVER_EXCHANGE, routing_key="*." * DELAY_LEVELS + queue))
    units = min(2 ** DELAY_LEVELS - 1, math.ceil(delay / DELAY_UNIT))
    bits = format(units, f"0{DELAY_LEVELS}b")
    return needed, DELAY_EXCHANGE.format(DELAY_LEVELS - 1), ".".join(bits) + "." + queue


def wire_fields(payload: bytes, priority: int, redeliveries: int = 0) -> tuple[dict[str, Any], bytes]:
    """The AMQP message properties and body of a packed message: Celery's protocol v2 with
    the task headers as AMQP headers, persistent."""
    try:
        msg = protocol.unpack(payload)
    except DecodeError:  # not a task message: carried as-is (the worker will dead-letter it)
        return {"delivery_mode": 2, "priority": priority, "content_type": "application/octet-stream",
                "headers": {REDELIVERIES: redeliveries} if redeliveries else None}, payload
    props = msg.properties
    headers = _amqp_table(msg.headers)
    if redeliveries:
        headers[REDELIVERIES] = redeliveries
    return {"headers": headers, "content_type": msg.content_type, "content_encoding": msg.content_encoding,
            "delivery_mode": 2, "priority": priority, "correlation_id": props.get("correlation_id"),
            "reply_to": props.get("reply_to")}, msg.body


_FLOAT_TAG = "celeriac-float:"


def _amqp_table(value: Any) -> Any:
    """pika has no float field type: floats (time limits) travel as AMQP decimals, which hold
    32 bits of digits; a float with more (an epoch timestamp) travels as tagged text."""
    if isinstance(value, float):
        exact = decimal.Decimal(repr(value))
        digits = exact.as_tuple()
        unscaled = int(exact.scaleb(-int(digits.exponent))) if isinstance(digits.exponent, int) else None
        if unscaled is not None and -2**31 <= unscaled < 2**31 and -255 <= int(digits.exponent) <= 0:
            return exact
        return _FLOAT_TAG + repr(value)
    if isinstance(value, dict):
        return {k: _amqp_table(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_amqp_table(v) for v in value]
    return value


