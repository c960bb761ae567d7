"""RabbitMQ routing and wire format, independent of the client library: the blocking broker
(pika, broker.py) and the asyncio client (aiormq, aio.py) declare the
same queues and delay levels and publish the same messages through these functions.

Queues shared with Celery (`celery_wire_queues`, docs/celery-interop.md): Celery declares its
queues durable with no arguments, and RabbitMQ refuses a second declaration with other
arguments (PRECONDITION_FAILED). So a shared queue is used as it is when it exists, and
otherwise declared exactly as Celery declares it (with `x-max-priority` only when
`task_queue_max_priority` asks for it, as in Celery). celeriac's priorities 1-9 then live in a
priority queue beside it, `celeriac.priority.<queue>`, which only celeriac workers consume;
priority 0 - celeriac's default and everything Celery sends - stays on the shared queue,
where both kinds of worker take it.

Quorum queues (`task_default_queue_type = "quorum"`, or one queue's `x-queue-type`, as Celery
5.5 spells them; docs/rabbitmq-quorum.md): replicated over the cluster's nodes, so a message a
publisher was confirmed survives the loss of a minority of them. They count deliveries
themselves (`x-delivery-count`), and their `x-delivery-limit` sends a poison message to
`celeriac.dead` (at-least-once dead-lettering). They have no `x-max-priority` before RabbitMQ
4.0 and two levels after, so priorities 5-9 ("high", RabbitMQ 4's own split) go to a quorum
queue beside it, `celeriac.priority.<queue>`, consumed with it and taken first; 0-4 stay on the
queue. Their delay levels are quorum queues too (`celeriac.qdelay.<level>`): a delayed message
is as safe as a ready one.
"""

from __future__ import annotations

import decimal
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from ... import protocol
from ...exceptions import DecodeError, ImproperlyConfigured
from ...brokers.base import Outgoing, clamp_priority

DELAY_EXCHANGE = "celeriac.delay.{}"
DELAY_QUEUE = "celeriac.delay.{}"
DELIVER_EXCHANGE = "celeriac.delay.deliver"
DELAY_LEVELS = 32          # 2**32 units: over 13 years at 100 ms
DELAY_UNIT = 0.1           # seconds per unit; delays are rounded up, never run early
REDELIVERIES = "x-celeriac-redeliveries"
PRIORITY_QUEUE = "celeriac.priority.{}"
DEAD_QUEUE = "celeriac.dead"
QUORUM_DELAY = "celeriac.qdelay.{}"  # the quorum delay levels' exchanges and queues
DELIVERY_COUNT = "x-delivery-count"  # set by quorum queues: how often the message came back
QUORUM_HIGH = 5  # quorum queues' two priority levels, as RabbitMQ 4 splits them: 5-9 is high
# At-least-once dead-lettering: the source queue keeps a message until the target confirmed it
# (RabbitMQ requires reject-publish overflow for it).
_SAFE_DEAD_LETTERING = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


@dataclass(frozen=True)
class Declare:
    """One declaration a publish needs: an exchange, a queue, or a binding (of queue or
    exchange `name` to exchange `source`)."""

    # "exchange" | "queue" | "bind_queue" | "bind_exchange" | "shared_queue" (a queue shared with
    # Celery: used as it is when it exists, else declared with `arguments`, as Celery would)
    kind: str
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


def quorum_declaration(queue: str, delivery_limit: int | None) -> Declare:
    """A quorum task queue; with a delivery limit, a message returned more often than that
    (its worker died each time) is dead-lettered to celeriac.dead by RabbitMQ itself."""
    arguments: dict[str, Any] = {"x-queue-type": "quorum"}
    if delivery_limit is not None:
        arguments.update({"x-delivery-limit": delivery_limit, "x-dead-letter-exchange": "",
                          "x-dead-letter-routing-key": DEAD_QUEUE, **_SAFE_DEAD_LETTERING})
    return Declare("queue", queue, arguments)


def delay_declarations(quorum: bool = False) -> list[Declare]:
    """The delay levels: queue L keeps a message 2**L units (TTL), then dead-letters it to
    level L-1 (level 0: to the deliver exchange); the bits of the routing key choose, at
    each level, whether the message waits there or skips on down. `quorum`: the levels of
    messages for quorum queues, quorum queues themselves (TTL needs RabbitMQ >= 3.10)."""
    names = QUORUM_DELAY if quorum else DELAY_EXCHANGE
    extra = {"x-queue-type": "quorum", **_SAFE_DEAD_LETTERING} if quorum else {}
    out = [Declare("exchange", DELIVER_EXCHANGE)]
    out += [Declare("exchange", names.format(level)) for level in range(DELAY_LEVELS)]
    for level in range(DELAY_LEVELS):
        lower = names.format(level - 1) if level else DELIVER_EXCHANGE
        name, skip = names.format(level), "*." * (DELAY_LEVELS - 1 - level)
        out += [Declare("queue", name, {"x-message-ttl": int((2 ** level) * DELAY_UNIT * 1000),
                                        "x-dead-letter-exchange": lower, **extra}),
                Declare("bind_queue", name, source=names.format(level), routing_key=f"{skip}1.#"),
                Declare("bind_exchange", lower, source=names.format(level), routing_key=f"{skip}0.#")]
    return out


def route_plan(message: Outgoing, now: float | None = None,
               shared: SharedQueues | None = None) -> tuple[list[Declare], str, str]:
    """What must exist before `message` is published, and its exchange and routing key:
    straight to its queue, or (with an ETA ahead) into the delay levels, steered by the bits
    of its delay in units of DELAY_UNIT (rounded up: never early). With `shared`, a message of
    a queue shared with Celery goes to that queue or to its priority queue beside it."""
    queue = shared.target(message.queue, clamp_priority(message.priority)) if shared else message.queue
    quorum = shared is not None and shared.quorum(queue)
    needed = [shared.declaration(queue) if shared else queue_declaration(queue)]
    if shared is not None and quorum and shared.delivery_limit is not None:
        needed.insert(0, shared.declaration(DEAD_QUEUE))  # where its poison messages go
    delay = (message.eta - (time.time() if now is None else now)) if message.eta else 0.0
    if delay <= 0:
        return needed, "", queue
    needed += delay_declarations(quorum)
    needed.append(Declare("bind_queue", queue, source=DELIVER_EXCHANGE, routing_key="*." * DELAY_LEVELS + queue))
    units = min(2 ** DELAY_LEVELS - 1, math.ceil(delay / DELAY_UNIT))
    bits = format(units, f"0{DELAY_LEVELS}b")
    return needed, (QUORUM_DELAY if quorum else DELAY_EXCHANGE).format(DELAY_LEVELS - 1), ".".join(bits) + "." + queue


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


class SharedQueues:
    """How celeriac lays out its queues on RabbitMQ: which are shared with Celery, which are
    quorum queues, and the priority queues beside them."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.names = frozenset(options.get("celery_wire_queues") or ())
        self.max_priority = options.get("queue_max_priority")
        self.queue_type = str(options.get("queue_type") or "classic")
        self.queue_types = queue_types(options.get("task_queues"))
        if self.queue_type not in ("classic", "quorum"):
            raise ImproperlyConfigured(f"task_default_queue_type is {self.queue_type!r}: celeriac supports "
                                       "'classic' and 'quorum' queues on RabbitMQ")
        # A quorum queue returns a message at most this often before dead-lettering it. The
        # worker dead-letters a message delivered more than task_max_deliveries times itself
        # (and records WorkerLostError as its result); the queue's limit is one return later,
        # for when the worker could not (it died on that delivery too). 0: no limit.
        max_deliveries = int(options.get("max_deliveries") or 0)
        self.delivery_limit = max_deliveries if max_deliveries > 0 else None

    def __contains__(self, queue: str) -> bool:
        return queue in self.names

    def quorum(self, queue: str) -> bool:
        """Is this RabbitMQ queue (a task queue, its priority queue, or celeriac.dead) a quorum queue?"""
        return self.queue_types.get(self.logical(queue), self.queue_type) == "quorum"

    def target(self, queue: str, priority: int) -> str:
        """The queue a message for `queue` with this priority goes to."""
        if self.quorum(queue):
            return PRIORITY_QUEUE.format(queue) if priority >= QUORUM_HIGH else queue
        if priority > 0 and queue in self.names and not self.max_priority:
            return PRIORITY_QUEUE.format(queue)
        return queue

    @staticmethod
    def logical(queue: str) -> str:
        """The queue a message was sent to, whichever of its RabbitMQ queues it came from."""
        prefix = PRIORITY_QUEUE.format("")
        return queue[len(prefix):] if queue.startswith(prefix) else queue

    def consumed(self, queues: Sequence[str]) -> list[str]:
        """The RabbitMQ queues behind these queues (priority queues first)."""
        extra = [PRIORITY_QUEUE.format(q) for q in queues
                 if self.quorum(q) or q in self.names and not self.max_priority]
        return [*extra, *queues]

    def declaration(self, queue: str) -> Declare:
        """How `queue` is declared: a shared queue as Celery would, a quorum queue with its
        delivery limit, any other with priorities 0-9."""
        if self.quorum(queue):
            if queue in self.names:  # Celery 5.5 declares a quorum queue with x-queue-type only
                return Declare("shared_queue", queue, {"x-queue-type": "quorum"})
            return quorum_declaration(queue, None if queue == DEAD_QUEUE else self.delivery_limit)
        if queue in self.names:
            limit = self.max_priority
            return Declare("shared_queue", queue, {"x-max-priority": int(limit)} if limit else None)
        return queue_declaration(queue)

    def declare(self, conn: Any, channel: Any, queue: str, arguments: dict[str, Any] | None = None) -> None:
        """Use the shared queue as it is if it exists (Celery made it, or an older celeriac with
        priorities), else declare it as Celery does - so Celery's own declaration, before or
        after ours, never clashes."""
        import pika.exceptions
        probe = conn.channel()
        try:
            probe.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            channel.queue_declare(queue, durable=True, arguments=arguments)
        else:
            probe.close()


def queue_types(task_queues: Any) -> dict[str, str]:
    """{queue: "quorum" | "classic"} from Celery's `task_queues`: kombu Queue objects (or any
    object with `name` and `queue_arguments`), dicts with those keys, or Celery's older
    {name: {"queue_arguments": ...}} mapping. Only `x-queue-type` is read from them."""
    if not task_queues:
        return {}
    if isinstance(task_queues, dict):
        entries = [{"name": name, **(options or {})} for name, options in task_queues.items()]
    else:
        entries = list(task_queues)
    out: dict[str, str] = {}
    for entry in entries:
        get = entry.get if isinstance(entry, dict) else lambda key, e=entry: getattr(e, key, None)
        arguments = get("queue_arguments") or {}
        kind = arguments.get("x-queue-type")
        if get("name") and kind:
            out[str(get("name"))] = str(kind)
    return out


class _QuietProbes(logging.Filter):
    """pika logs every channel the broker closes as a warning; a 404 from our own passive
    probe ("is the shared queue there yet?") is the expected answer, not a problem, and
    printed it reads like one in a worker's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.args and isinstance(record.args, tuple) and record.args[0] == 404)


logging.getLogger("pika.channel").addFilter(_QuietProbes())


def eta_of(headers: dict[str, Any] | None) -> float | None:
    """The `eta` header as epoch seconds (a Celery client sends its countdown that way,
    straight to the queue); None when absent or not a date."""
    text = (headers or {}).get("eta")
    if isinstance(text, bytes):
        text = text.decode()
    try:
        return protocol.iso_to_epoch(text) if isinstance(text, str) else None
    except ValueError:
        return None


# Headers that RabbitMQ (dead-lettering: x-death, x-first-death-*, x-last-death-*; quorum
# queues: x-delivery-count) or this
# transport (x-celeriac-*: crash count, dead-letter reason) put on one trip of a message.
# They describe that trip, not the task, so a delivery never turns them into task headers:
# a message built again from a task's request (a retry, a rate-limit deferral, an ETA
# re-delay) would carry the old x-death, and RabbitMQ's dead-letter cycle detection silently
# drops a message that expires out of a delay level its x-death already names.
_TRIP_HEADER_PREFIXES = ("x-death", "x-first-death-", "x-last-death-", "x-celeriac-", DELIVERY_COUNT)


def task_headers(headers: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (headers or {}).items() if not k.startswith(_TRIP_HEADER_PREFIXES)}
