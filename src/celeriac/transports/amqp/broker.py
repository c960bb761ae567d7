"""RabbitMQ broker (AMQP 0-9-1 through pika): the tutorial's `amqp://guest@localhost//`.

How the broker guarantees map onto RabbitMQ:
- Durable queues with `x-max-priority` 9 (priorities 0-9, higher first), persistent
  messages, publisher confirms (a returned `delay()` means RabbitMQ has the message) and
  transactions for batches (one round trip for a whole group).
- Leases are RabbitMQ's own: a message is unacked while a worker holds it, and goes back
  when that worker's connection closes. No AMQP heartbeats (a task busy for minutes could
  not answer them, and the server would hand its message to someone else); TCP keepalive
  notices dead peers instead, and a dead process closes its socket at once.
- Delays never sit unacked in a worker (RabbitMQ's consumer timeout would cut them off):
  a delayed message walks down binary delay levels - queue L holds messages for 2**L
  units (TTL) and dead-letters them to level L-1 - steered by the bits of its delay in
  the routing key, then lands on its queue. Any ETA length, surviving every restart.
- Classic queues count no deliveries, so a message that comes back after a crash is
  republished with `x-celeriac-redeliveries` + 1 (and the original acked): the count that
  sends poison messages to the dead-letter queue survives further crashes. Quorum queues
  count them themselves (`x-delivery-count`) and dead-letter past their delivery limit
  (wire.py, docs/rabbitmq-quorum.md).
- Several nodes in one URL (`amqp://h1//;amqp://h2//`): a connection goes to the first that
  answers, and after a connection is lost the next one is tried first.
- Messages travel in Celery's protocol v2 layout: task headers as AMQP headers.
- Events go through a topic exchange (`celeriac.events`), one message per flushed batch;
  each monitor reads its own exclusive queue, bounded in bytes (RabbitMQ drops its oldest
  batches when a monitor falls behind, and the batch numbers show the gap).
"""

from __future__ import annotations

import decimal

import collections
import itertools
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypeVar
from urllib.parse import unquote, urlsplit

from ... import protocol
from ...exceptions import ImproperlyConfigured, OperationalError
from .dead_letters import DEAD_TYPE, DeadLetters
from .events import EVENT_BYTES, EVENT_EXCHANGE, EVENT_PREFETCH, EVENT_TYPE, AMQPEventChannel  # noqa: F401
from .wire import (DELAY_EXCHANGE, DELAY_LEVELS, DELAY_QUEUE, DELAY_UNIT, DELIVER_EXCHANGE,  # noqa: F401
                        DEAD_QUEUE, DELIVERY_COUNT, QUORUM_HIGH, REDELIVERIES, _FLOAT_TAG, Declare, SharedQueues,
                        _amqp_table, eta_of, route_plan, task_headers as _task_headers, wire_fields)
# Imported here, not where the channel is made: pool processes make it from several threads at
# once, and two threads importing these two modules concurrently once met a half-made module.
from ...brokers.celery_events import MirroredEventChannel  # Celery's monitors see us too
from .celery_events import amqp_mirror
from ...brokers.base import Broker, Delivery, EventChannel, Outgoing, clamp_priority

try:
    import pika
    import pika.exceptions
except ImportError:  # pragma: no cover - only without the amqp extra
    pika = None

T = TypeVar("T")



@dataclass
class _Link:
    """One connection of one (process, thread), with its channels."""

    conn: Any
    generation: int
    thread: int
    endpoint: int = 0  # which node of a failover URL it is connected to
    confirm: Any = None
    tx: Any = None
    consume: Any = None
    events: Any = None
    consuming: tuple[str, ...] = ()
    prefetch: int = 0
    per_consumer: bool = False  # quorum queues know no channel-wide (global) prefetch
    declared: set[tuple[str, str, str, str]] = field(default_factory=set)  # Declare.key of what exists
    buffer: collections.deque[tuple[Any, Any, bytes]] = field(default_factory=collections.deque)


class AMQPBroker(DeadLetters, Broker):
    schemes = ("amqp", "amqps", "pyamqp")
    tracks_workers = False

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options)
        if pika is None:
            raise ImproperlyConfigured("the RabbitMQ transport needs pika: pip install 'celeriac[amqp]'")
        # Celery's failover URL: several brokers separated by ';', tried in order.
        self.endpoints = [self._parameters(part.strip(), self.options) for part in url.split(";") if part.strip()]
        self._active = 0
        self._links: dict[tuple[int, int], _Link] = {}
        self._by_generation: dict[int, _Link] = {}
        self._generations = itertools.count(1)
        self._lock = threading.Lock()
        self.wire = SharedQueues(self.options)  # queues shared with Celery (wire.py)
        import atexit
        atexit.register(self.close)  # a client's connection is closed, not dropped, when it exits

    # --- connections ---

    @property
    def params(self) -> Any:
        """The connection parameters of the node in use (of a failover URL, the one that answered last)."""
        return self.endpoints[self._active]

    @staticmethod
    def _parameters(url: str, options: dict[str, Any]) -> Any:
        parts = urlsplit(url.replace("pyamqp://", "amqp://", 1))
        scheme = "amqps" if parts.scheme == "amqps" else "amqp"
        user = unquote(parts.username or "guest")
        password = unquote(parts.password or ("guest" if user == "guest" else ""))
        host = parts.hostname or "localhost"
        port = parts.port or (5671 if scheme == "amqps" else 5672)
        # Celery writes the default vhost as `//`: the path after the first slash is the vhost.
        vhost = unquote(parts.path[1:]) if parts.path and parts.path != "/" else "/"
        kwargs: dict[str, Any] = {
            "host": host, "port": port, "virtual_host": vhost or "/",
            "credentials": pika.PlainCredentials(user, password),
            "heartbeat": 0,  # see the module docstring: TCP keepalive instead
            "tcp_options": {"TCP_KEEPIDLE": 60, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 6},
            "blocked_connection_timeout": float(options.get("blocked_connection_timeout", 300)),
            "socket_timeout": float(options.get("socket_timeout", 10)),
            "connection_attempts": 1,
        }
        if scheme == "amqps":
            import ssl
            from urllib.parse import parse_qsl
            # TLS options from the URL query (?ssl_ca_certs=...) or from broker_use_ssl / transport options.
            options = {**dict(parse_qsl(parts.query)), **options}
            context = ssl.create_default_context(cafile=options.get("ssl_ca_certs") or options.get("ca_certs"))
            if options.get("ssl_certfile"):
                context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
            if options.get("ssl_cert_reqs") in (ssl.CERT_NONE, "none", "CERT_NONE"):
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            kwargs["ssl_options"] = pika.SSLOptions(context, host)
        return pika.ConnectionParameters(**kwargs)

    def _link(self) -> _Link:
        key = (os.getpid(), threading.get_ident())
        link = self._links.get(key)
        if link is not None and link.conn.is_open:
            return link
        if link is not None:
            self._drop(link)
        conn, endpoint = self._connect()
        link = _Link(conn, next(self._generations), threading.get_ident(), endpoint)
        link.confirm = conn.channel()
        link.confirm.confirm_delivery()
        with self._lock:
            self._links[key] = link
            self._by_generation[link.generation] = link
        return link

    def _connect(self) -> tuple[Any, int]:
        """A connection to the first node that answers, starting with the one in use."""
        failures = []
        for step in range(len(self.endpoints)):
            index = (self._active + step) % len(self.endpoints)
            params = self.endpoints[index]
            try:
                conn = pika.BlockingConnection(params)
            except pika.exceptions.ProbableAuthenticationError as exc:
                raise OperationalError(self._refused(str(exc))) from exc
            except pika.exceptions.ProbableAccessDeniedError as exc:
                raise OperationalError(f"RabbitMQ at {self.safe_url} denied access to the virtual host "
                                       f"{params.virtual_host!r}: {exc}") from exc
            except (pika.exceptions.AMQPError, OSError) as exc:
                failures.append(f"{params.host}:{params.port}: {exc!r}")
                continue
            self._active = index
            return conn, index
        raise OperationalError(f"cannot reach RabbitMQ at {self.safe_url} ({'; '.join(failures)})")

    def _lost(self, link: _Link) -> None:
        """The connection broke: drop it, and with a failover URL try the next node first."""
        self._drop(link)
        if self._active == link.endpoint:
            self._active = (link.endpoint + 1) % len(self.endpoints)

    def _refused(self, detail: str) -> str:
        user = self.params.credentials.username
        text = f"RabbitMQ at {self.safe_url} refused user {user!r} (wrong user or password): {detail}"
        if user == "guest":
            text += (". Note: RabbitMQ lets the default 'guest' user connect only from localhost; "
                     "for other hosts create a user (rabbitmqctl add_user NAME PASSWORD; "
                     "rabbitmqctl set_permissions NAME '.*' '.*' '.*') and put it in the URL")
        return text

    def _drop(self, link: _Link) -> None:
        with self._lock:
            self._by_generation.pop(link.generation, None)
            for key, value in list(self._links.items()):
                if value is link:
                    del self._links[key]
        try:
            if link.conn.is_open:
                link.conn.close()
        except Exception:  # closing a broken connection may fail again; it is gone either way
            pass

    def _guard(self, what: str, fn: Callable[[_Link], T]) -> T:
        link = self._link()
        try:
            return fn(link)
        except pika.exceptions.UnroutableError as exc:
            raise OperationalError(f"RabbitMQ at {self.safe_url} could not route {what}: {exc}") from exc
        except pika.exceptions.NackError as exc:
            # A new connection for the next try: a quorum queue that had no leader for a moment
            # (a node lost) can leave a channel refusing every later publish (RabbitMQ 3.10).
            self._drop(link)
            raise OperationalError(f"RabbitMQ at {self.safe_url} refused to store {what} (nack)") from exc
        except pika.exceptions.ChannelClosedByBroker as exc:
            self._drop(link)
            if exc.reply_code == 406 and ("x-max-priority" in str(exc.reply_text)
                                          or "x-queue-type" in str(exc.reply_text)
                                          or "x-delivery-limit" in str(exc.reply_text)):
                raise OperationalError(
                    f"a queue exists on {self.safe_url} with other arguments than celeriac declares (was it "
                    f"declared by another program, such as Celery, or with another task_default_queue_type or "
                    f"task_max_deliveries?): {exc.reply_text}. List the queue in celery_wire_queues to share it "
                    "with Celery, delete it, or use another queue name (docs/celery-interop.md, "
                    "docs/rabbitmq-quorum.md)") from exc
            raise OperationalError(f"RabbitMQ at {self.safe_url} closed the channel during {what}: "
                                   f"{exc.reply_code} {exc.reply_text}") from exc
        except (pika.exceptions.AMQPError, OSError) as exc:
            self._lost(link)
            raise OperationalError(f"lost the connection to RabbitMQ at {self.safe_url} during {what}: "
                                   f"{exc!r}") from exc

    def _declare(self, link: _Link, queue: str) -> None:
        self._apply(link, [self.wire.declaration(queue)])

    def prepare(self, queues: Sequence[str]) -> None:
        def declare(link: _Link) -> None:
            for queue in queues:
                self._declare(link, queue)
        self._guard("declaring the worker's queues", declare)

    def _apply(self, link: _Link, declarations: Sequence[Declare]) -> None:
        """Run the declarations this connection has not made yet."""
        ch = link.confirm
        for d in declarations:
            if d.key in link.declared:
                continue
            if d.kind == "exchange":
                ch.exchange_declare(d.name, d.exchange_type, durable=True)
            elif d.kind == "queue":
                ch.queue_declare(d.name, durable=True, arguments=d.arguments)
            elif d.kind == "shared_queue":
                self.wire.declare(link.conn, ch, d.name, d.arguments)
            elif d.kind == "bind_queue":
                ch.queue_bind(d.name, d.source, routing_key=d.routing_key)
            else:
                ch.exchange_bind(d.name, d.source, routing_key=d.routing_key)
            link.declared.add(d.key)

    # --- publishing ---

    @staticmethod
    def _wire(payload: bytes, priority: int, redeliveries: int = 0) -> tuple[Any, bytes]:
        fields, body = wire_fields(payload, priority, redeliveries)
        return pika.BasicProperties(**fields), body

    def _route(self, link: _Link, message: Outgoing) -> tuple[str, str]:
        declarations, exchange, key = route_plan(message, shared=self.wire)
        self._apply(link, declarations)
        return exchange, key

    def publish(self, messages: Sequence[Outgoing]) -> None:
        if not messages:
            return
        if len(messages) == 1:
            self._guard("publish", lambda link: self._publish_confirmed(link, messages[0]))
        else:
            self._guard("publish", lambda link: self._publish_batch(link, messages))

    def _publish_confirmed(self, link: _Link, message: Outgoing) -> None:
        exchange, key = self._route(link, message)
        props, body = self._wire(message.payload, clamp_priority(message.priority))
        link.confirm.basic_publish(exchange, key, body, props, mandatory=True)

    def _publish_batch(self, link: _Link, messages: Sequence[Outgoing],
                       redeliveries: Sequence[int] | None = None) -> None:
        # One transaction: the commit is the single round trip that says "all stored".
        if link.tx is None:
            link.tx = link.conn.channel()
            link.tx.tx_select()
        routes = [self._route(link, m) for m in messages]
        counts = redeliveries or [0] * len(messages)
        for (exchange, key), message, count in zip(routes, messages, counts, strict=True):
            props, body = self._wire(message.payload, clamp_priority(message.priority), count)
            link.tx.basic_publish(exchange, key, body, props)
        link.tx.tx_commit()

    # --- consuming ---

    def fetch(self, queues: Sequence[str], worker_id: str, owner: str, limit: int,
              timeout: float, in_flight: int = 0) -> list[Delivery]:
        return self._guard("fetch", lambda link: self._fetch(link, tuple(queues), owner, limit, timeout,
                                                             in_flight))

    def _fetch(self, link: _Link, queues: tuple[str, ...], owner: str, limit: int,
               timeout: float, in_flight: int) -> list[Delivery]:
        prefetch = limit + in_flight  # RabbitMQ counts running async tasks' messages as unacked
        if link.consume is None or link.consuming != queues:
            if link.consume is not None:
                link.consume.close()  # its unacked messages go back (only when the queues change)
            self._consume(link, link.conn.channel(), queues, prefetch)
        elif link.per_consumer and prefetch > link.prefetch:
            # A per-consumer prefetch holds for consumers made after it: make them again, with
            # the larger one (running async tasks hold messages). Never for a smaller one: the
            # extra messages wait in this buffer. pika gives back (nacks) messages it holds for a
            # cancelled consumer and has not handed over, which a quorum queue counts as a
            # delivery: take them into the buffer first.
            link.conn.process_data_events(time_limit=0)
            for tag in list(link.consume.consumer_tags):
                link.consume.basic_cancel(tag)  # what it delivered stays ours to ack
            self._consume(link, link.consume, queues, prefetch)
        elif not link.per_consumer and link.prefetch != prefetch:
            link.consume.basic_qos(prefetch_count=prefetch, global_qos=True)
            link.prefetch = prefetch
        deadline = time.monotonic() + timeout
        out: list[Delivery] = []
        while not out:
            while not link.buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return out
                link.conn.process_data_events(time_limit=min(remaining, 1.0))
            if link.per_consumer and len(link.buffer) > 1:
                # Each queue (and its high-priority queue) fills a prefetch of its own: of what
                # arrived, high priority first, in arrival order within a level (sort is stable).
                link.buffer = collections.deque(sorted(link.buffer,
                                                       key=lambda m: int(m[1].priority or 0) < QUORUM_HIGH))
            while link.buffer and len(out) < limit:
                method, props, body = link.buffer.popleft()
                delivery = self._delivery(link, method, props, body, owner)
                if delivery is not None and not self._deferred(link, method, props, delivery):
                    delivery.queue = self.wire.logical(delivery.queue)
                    out.append(delivery)
        return out

    def _consume(self, link: _Link, channel: Any, queues: tuple[str, ...], prefetch: int) -> None:
        """Consume `queues` (and the RabbitMQ queues behind them) on `channel`. The prefetch
        covers the whole channel, unless a quorum queue is among them: quorum queues refuse a
        channel-wide prefetch, so each consumer gets `prefetch` of its own."""
        consumed = self.wire.consumed(queues)
        per_consumer = any(self.wire.quorum(q) for q in consumed)
        channel.basic_qos(prefetch_count=prefetch, global_qos=not per_consumer)
        for queue in consumed:
            self._declare(link, queue)
            channel.basic_consume(queue, lambda ch, method, props, body: link.buffer.append(
                (method, props, body)), auto_ack=False)
        link.consume, link.consuming, link.prefetch, link.per_consumer = channel, queues, prefetch, per_consumer

    def _deferred(self, link: _Link, method: Any, props: Any, delivery: Delivery) -> bool:
        """A message whose `eta` is still ahead (a Celery client sends its countdown that way,
        straight to the queue) walks the delay levels instead of waiting in a worker's memory;
        one due within a delay unit is held here until its time (another trip through the
        levels would make it up to a unit late), so it never runs early."""
        eta = eta_of(props.headers)
        ahead = eta - time.time() if eta is not None else 0.0
        if ahead <= 0:
            return False
        if ahead <= DELAY_UNIT:
            link.conn.sleep(ahead)  # pika's sleep: the connection's heartbeats and deliveries go on
            return False
        self._publish_confirmed(link, Outgoing(delivery.queue, delivery.payload, delivery.priority, eta))
        link.consume.basic_ack(method.delivery_tag)
        return True

    def _delivery(self, link: _Link, method: Any, props: Any, body: bytes, owner: str) -> Delivery | None:
        raw = props.headers or {}
        # Quorum queues count returns themselves; a copy made by release() carries earlier ones.
        redeliveries = int(raw.get(REDELIVERIES) or 0) + int(raw.get(DELIVERY_COUNT) or 0)
        headers = _task_headers(raw)
        queue = method.routing_key
        if method.redelivered and not self.wire.quorum(self._queue_of(method, link)):
            # Back after a crash: carry the count forward in a copy, then drop this delivery.
            copy = pika.BasicProperties(headers={**headers, REDELIVERIES: redeliveries + 1},
                                        content_type=props.content_type,
                                        content_encoding=props.content_encoding, delivery_mode=2,
                                        priority=props.priority, correlation_id=props.correlation_id,
                                        reply_to=props.reply_to)
            link.confirm.basic_publish("", self._queue_of(method, link), body, copy, mandatory=True)
            link.consume.basic_ack(method.delivery_tag)
            return None
        tag = f"{link.generation}:{method.delivery_tag}"
        priority = int(props.priority or 0)
        if "task" not in headers or "id" not in headers:
            return Delivery(tag, queue, body, redeliveries + 1, priority, owner)
        payload = self._packed(headers, props, body, method.exchange, queue)
        return Delivery(tag, self._queue_of(method, link), payload, redeliveries + 1, priority, owner)

    @staticmethod
    def _packed(headers: dict[str, Any], props: Any, body: bytes, exchange: str, routing_key: str) -> bytes:
        """A task message as it arrived over AMQP, packed as every transport hands it on."""
        msg = protocol.TaskMessage(
            _from_amqp_table(headers),
            {"correlation_id": props.correlation_id, "reply_to": props.reply_to, "priority": int(props.priority or 0),
             "delivery_info": {"exchange": exchange, "routing_key": routing_key}},
            body, props.content_type or protocol.JSON, props.content_encoding or "utf-8")
        return protocol.pack(msg)

    @staticmethod
    def _queue_of(method: Any, link: _Link) -> str:
        # Delayed messages arrive with the delay bits in front of the queue name.
        key = str(method.routing_key)
        if method.exchange == DELIVER_EXCHANGE or key.count(".") >= DELAY_LEVELS:
            return key.split(".", DELAY_LEVELS)[-1]
        return key

    def _on_owner(self, tags: Sequence[str], action: Callable[[_Link, int], None]) -> None:
        by_link: dict[int, list[int]] = {}
        for tag in tags:
            generation_text, _, number_text = tag.partition(":")
            by_link.setdefault(int(generation_text), []).append(int(number_text))
        for generation, numbers in by_link.items():
            link = self._by_generation.get(generation)
            if link is None or not link.conn.is_open or link.consume is None:
                continue  # that connection is gone: RabbitMQ already put its messages back

            def run(link: _Link = link, numbers: list[int] = numbers) -> None:
                for number in numbers:
                    action(link, number)

            if link.thread == threading.get_ident():
                run()
            else:  # e.g. the asyncio thread acking: the connection's own thread must send it
                link.conn.add_callback_threadsafe(run)

    def take_over_connections(self) -> None:
        # The owning thread is frozen in a task and never serves its callbacks again; this
        # thread sends the final acks itself, then the process exits.
        me = threading.get_ident()
        for link in self._by_generation.values():
            link.thread = me

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        try:
            self._on_owner([d.tag for d in deliveries], lambda link, n: link.consume.basic_ack(n))
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise OperationalError(f"lost the connection to RabbitMQ at {self.safe_url} while acking; "
                                   f"the messages will be delivered again: {exc!r}") from exc

    def release(self, deliveries: Sequence[Delivery]) -> None:
        # A plain requeue would mark them redelivered (counted as a crash): put copies back
        # instead, each keeping the crash count it had (the payload no longer carries it).
        if not deliveries:
            return
        messages = [Outgoing(d.queue, d.payload, d.priority) for d in deliveries]
        counts = [d.deliveries - 1 for d in deliveries]
        self._guard("publish", lambda link: self._publish_batch(link, messages, counts))
        self.ack(deliveries)

    def dead_letter(self, items: Sequence[tuple[Delivery, str]]) -> None:
        if not items:
            return

        def move(link: _Link) -> None:
            self._declare(link, DEAD_QUEUE)
            for delivery, reason in items:
                props = pika.BasicProperties(
                    delivery_mode=2, message_id=uuid.uuid4().hex, timestamp=int(time.time()),
                    content_type=DEAD_TYPE,
                    headers={"x-celeriac-reason": reason, "x-celeriac-queue": delivery.queue,
                             "x-celeriac-deliveries": delivery.deliveries})
                link.confirm.basic_publish("", DEAD_QUEUE, delivery.payload, props, mandatory=True)

        self._guard("dead-letter", move)
        self.ack([d for d, _ in items])

    # --- liveness: RabbitMQ's connections are the leases ---

    def heartbeat(self, worker_id: str, ttl: float, info: dict[str, Any] | None = None) -> None:
        self._guard("connect", lambda link: link.conn.process_data_events(time_limit=0))

    def unregister(self, worker_id: str) -> int:
        return 0  # closing a worker's connections returns its unacked messages

    def recover(self) -> int:
        return 0  # RabbitMQ requeues the messages of closed connections by itself

    def requeue_owner(self, owner: str, running_tag: str | None, keep_all_counts: bool = False) -> int:
        return 0  # the dead child's connection closed: RabbitMQ requeued its messages

    def live_workers(self) -> dict[str, dict[str, Any]]:
        return {}  # RabbitMQ keeps no worker list: workers beat into the result store instead

    # --- administration ---

    def purge(self, queues: Sequence[str]) -> int:
        def purge(link: _Link) -> int:
            total = 0
            for queue in self.wire.consumed(queues):
                self._declare(link, queue)
                total += int(link.confirm.queue_purge(queue).method.message_count)
            return total

        return self._guard("purge", purge)

    def queue_sizes(self, queues: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        def sizes(link: _Link) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for queue in self.wire.consumed(queues or ["celery"]):
                self._declare(link, queue)
                ok = link.confirm.queue_declare(queue, passive=True)
                # AMQP reports ready messages only; leased and delayed counts are unknown (-1).
                row = out.setdefault(self.wire.logical(queue), {"ready": 0, "reserved": -1, "delayed": -1})
                row["ready"] += int(ok.method.message_count)
            return out

        return self._guard("queue sizes", sizes)

    # --- events ---

    def event_channel(self) -> EventChannel | None:
        channel = AMQPEventChannel(self, int(self.options.get("events_max_len", 10000)))
        if not self.wire.names:
            return channel
        return MirroredEventChannel(channel, amqp_mirror(self))

    def close(self) -> None:
        for key, link in list(self._links.items()):
            if key[0] == os.getpid():
                self._drop(link)


def _from_amqp_table(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes) and value.startswith(_FLOAT_TAG.encode()):
        value = value.decode()
    if isinstance(value, str) and value.startswith(_FLOAT_TAG):
        return float(value[len(_FLOAT_TAG):])
    if isinstance(value, dict):
        return {k: _from_amqp_table(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_amqp_table(v) for v in value]
    return value
