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
  sends poison messages to the dead-letter queue survives further crashes.
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

from .. import protocol
from ..exceptions import ImproperlyConfigured, OperationalError
from .amqp_wire import (DELAY_EXCHANGE, DELAY_LEVELS, DELAY_QUEUE, DELAY_UNIT, DELIVER_EXCHANGE,  # noqa: F401
                        REDELIVERIES, _FLOAT_TAG, Declare, SharedQueues, _amqp_table, eta_of, route_plan,
                        wire_fields)
from .base import (Broker, DeadLetter, Delivery, EventChannel, EventSubscription, Outgoing, clamp_priority,
                   frame_events, unframe_events)

try:
    import pika
    import pika.exceptions
except ImportError:  # pragma: no cover - only without the amqp extra
    pika = None  # type: ignore[assignment]

T = TypeVar("T")

DEAD_QUEUE = "celeriac.dead"
EVENT_EXCHANGE = "celeriac.events"
EVENT_TYPE = "application/x-celeriac-events"  # length-prefixed JSON events, as on Redis
EVENT_BYTES = 512          # a monitor's queue holds events_max_len events of about this size
EVENT_PREFETCH = 2         # batches on their way to a monitor beyond what its queue holds


@dataclass
class _Link:
    """One connection of one (process, thread), with its channels."""

    conn: Any
    generation: int
    thread: int
    confirm: Any = None
    tx: Any = None
    consume: Any = None
    events: Any = None
    consuming: tuple[str, ...] = ()
    prefetch: int = 0
    declared: set[tuple[str, str, str, str]] = field(default_factory=set)  # Declare.key of what exists
    buffer: collections.deque[tuple[Any, Any, bytes]] = field(default_factory=collections.deque)


class AMQPBroker(Broker):
    schemes = ("amqp", "amqps", "pyamqp")
    tracks_workers = False

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options)
        if pika is None:
            raise ImproperlyConfigured("the RabbitMQ transport needs pika: pip install 'celeriac[amqp]'")
        self.params = self._parameters(url, self.options)
        self._links: dict[tuple[int, int], _Link] = {}
        self._by_generation: dict[int, _Link] = {}
        self._generations = itertools.count(1)
        self._lock = threading.Lock()
        self.wire = SharedQueues(self.options)  # queues shared with Celery (amqp_wire.py)
        import atexit
        atexit.register(self.close)  # a client's connection is closed, not dropped, when it exits

    # --- connections ---

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
        try:
            conn = pika.BlockingConnection(self.params)
        except pika.exceptions.ProbableAuthenticationError as exc:
            raise OperationalError(self._refused(str(exc))) from exc
        except pika.exceptions.ProbableAccessDeniedError as exc:
            raise OperationalError(f"RabbitMQ at {self.safe_url} denied access to the virtual host "
                                   f"{self.params.virtual_host!r}: {exc}") from exc
        except pika.exceptions.AMQPError as exc:
            raise OperationalError(f"cannot reach RabbitMQ at {self.safe_url} "
                                   f"({self.params.host}:{self.params.port}): {exc!r}") from exc
        except OSError as exc:
            raise OperationalError(f"cannot reach RabbitMQ at {self.safe_url}: {exc}") from exc
        link = _Link(conn, next(self._generations), threading.get_ident())
        link.confirm = conn.channel()
        link.confirm.confirm_delivery()
        with self._lock:
            self._links[key] = link
            self._by_generation[link.generation] = link
        return link

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
            raise OperationalError(f"RabbitMQ at {self.safe_url} refused to store {what} (nack)") from exc
        except pika.exceptions.ChannelClosedByBroker as exc:
            self._drop(link)
            if exc.reply_code == 406 and "x-max-priority" in str(exc.reply_text):
                raise OperationalError(
                    f"a queue exists on {self.safe_url} with other arguments than celeriac's durable priority "
                    f"queue (was it declared by another program, such as Celery?): {exc.reply_text}. List the "
                    "queue in celery_wire_queues to share it with Celery, delete it, or use another queue "
                    "name (docs/celery-interop.md)") from exc
            raise OperationalError(f"RabbitMQ at {self.safe_url} closed the channel during {what}: "
                                   f"{exc.reply_code} {exc.reply_text}") from exc
        except (pika.exceptions.AMQPError, OSError) as exc:
            self._drop(link)
            raise OperationalError(f"lost the connection to RabbitMQ at {self.safe_url} during {what}: "
                                   f"{exc!r}") from exc

    def _declare(self, link: _Link, queue: str) -> None:
        self._apply(link, [self.wire.declaration(queue)])

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
                self.wire.declare(link.conn, ch, d.name)
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
            channel = link.conn.channel()
            channel.basic_qos(prefetch_count=prefetch, global_qos=True)
            for queue in self.wire.consumed(queues):
                self._declare(link, queue)
                channel.basic_consume(queue, lambda ch, method, props, body: link.buffer.append(
                    (method, props, body)), auto_ack=False)
            link.consume, link.consuming, link.prefetch = channel, queues, prefetch
        elif link.prefetch != prefetch:
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
            while link.buffer and len(out) < limit:
                method, props, body = link.buffer.popleft()
                delivery = self._delivery(link, method, props, body, owner)
                if delivery is not None and not self._deferred(link, method, props, delivery):
                    delivery.queue = self.wire.logical(delivery.queue)
                    out.append(delivery)
        return out

    def _deferred(self, link: _Link, method: Any, props: Any, delivery: Delivery) -> bool:
        """A message whose `eta` is still ahead (a Celery client sends its countdown that way,
        straight to the queue) walks the delay levels instead of waiting in a worker's memory."""
        eta = eta_of(props.headers)
        if eta is None or eta <= time.time() + DELAY_UNIT:
            return False
        self._publish_confirmed(link, Outgoing(delivery.queue, delivery.payload, delivery.priority, eta))
        link.consume.basic_ack(method.delivery_tag)
        return True

    def _delivery(self, link: _Link, method: Any, props: Any, body: bytes, owner: str) -> Delivery | None:
        redeliveries = int((props.headers or {}).get(REDELIVERIES) or 0)
        headers = _task_headers(props.headers)
        queue = method.routing_key
        if method.redelivered:
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
        msg = protocol.TaskMessage(
            _from_amqp_table(headers),
            {"correlation_id": props.correlation_id, "reply_to": props.reply_to, "priority": priority,
             "delivery_info": {"exchange": method.exchange, "routing_key": queue}},
            body, props.content_type or protocol.JSON, props.content_encoding or "utf-8")
        return Delivery(tag, self._queue_of(method, link), protocol.pack(msg), redeliveries + 1, priority, owner)

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
                    content_type="application/x-celeriac-packed",
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

    def _drain_dead(self, link: _Link, limit: int | None) -> list[tuple[Any, Any, bytes]]:
        self._declare(link, DEAD_QUEUE)
        got: list[tuple[Any, Any, bytes]] = []
        while limit is None or len(got) < limit:
            method, props, body = link.confirm.basic_get(DEAD_QUEUE, auto_ack=False)
            if method is None:
                break
            got.append((method, props, body))
        return got

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        def read(link: _Link) -> list[DeadLetter]:
            got = self._drain_dead(link, limit)
            out = []
            for _method, props, body in got:
                headers = props.headers or {}
                out.append(DeadLetter(str(props.message_id), str(headers.get("x-celeriac-queue", "")), body,
                                      str(headers.get("x-celeriac-reason", "")), float(props.timestamp or 0),
                                      int(headers.get("x-celeriac-deliveries") or 0)))
            if got:
                link.confirm.basic_nack(got[-1][0].delivery_tag, multiple=True, requeue=True)
            return list(reversed(out))

        return self._guard("read dead letters", read)

    def requeue_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        def requeue(link: _Link) -> int:
            got = self._drain_dead(link, None)
            moved = 0
            for method, props, body in got:
                if ids is None or props.message_id in ids:
                    queue = str((props.headers or {}).get("x-celeriac-queue") or "celery")
                    self._publish_confirmed(link, Outgoing(queue, body, 0))
                    link.confirm.basic_ack(method.delivery_tag)
                    moved += 1
                else:
                    link.confirm.basic_nack(method.delivery_tag, requeue=True)
            return moved

        return self._guard("requeue dead letters", requeue)

    # --- events ---

    def event_channel(self) -> EventChannel | None:
        channel = _AMQPEventChannel(self, int(self.options.get("events_max_len", 10000)))
        if not self.wire.names:
            return channel
        from .celery_events import MirroredEventChannel, amqp_mirror  # Celery's monitors see us too
        return MirroredEventChannel(channel, amqp_mirror(self))

    def close(self) -> None:
        for key, link in list(self._links.items()):
            if key[0] == os.getpid():
                self._drop(link)


class _AMQPEventChannel(EventChannel):
    """Events through the `celeriac.events` topic exchange: a batch is one message (no
    publisher confirm: events may be lost, never waited for), routed by "events.<hostname>".
    Each message carries its sender's id, the number of its first event and its count, so a
    reader sees which events it never got."""

    def __init__(self, broker: AMQPBroker, max_len: int) -> None:
        self.broker = broker
        self.max_len = max(100, max_len)
        self.sender = uuid.uuid4().hex
        self.sent = 0
        self.since = 0  # ms: when this sender sent its first event
        self._pid = os.getpid()

    def send(self, events: Sequence[bytes]) -> None:
        if not events:
            return
        if self._pid != os.getpid():  # a forked pool process is a sender of its own
            self._pid, self.sender, self.sent = os.getpid(), uuid.uuid4().hex, 0
        if not self.sent:
            self.since = int(time.time() * 1000)
        framed = frame_events(events)
        props = pika.BasicProperties(content_type=EVENT_TYPE, delivery_mode=1, headers={
            "sender": self.sender, "since": self.since, "first": self.sent + 1, "count": len(events)})

        def publish(link: _Link) -> None:
            if link.events is None:
                link.events = link.conn.channel()
                link.events.exchange_declare(EVENT_EXCHANGE, exchange_type="topic", durable=True)
            link.events.basic_publish(EVENT_EXCHANGE, "events", framed, props)

        self.broker._guard("send events", publish)
        self.sent += len(events)

    def subscribe(self) -> EventSubscription:
        return _AMQPEventSubscription(self)


class _AMQPEventSubscription(EventSubscription):
    """A monitor's own queue on the events exchange: exclusive (gone with the monitor's
    connection), bounded in bytes, oldest batches dropped first. It has a connection of
    its own, so it can be made in one thread and read in another."""

    def __init__(self, channel: _AMQPEventChannel) -> None:
        broker = channel.broker
        self.safe_url = broker.safe_url
        self.missed = 0
        self._next: dict[str, int] = {}  # sender -> the number of the event expected next
        self._got: collections.deque[bytes] = collections.deque()
        self.subscribed = int(time.time() * 1000)
        try:
            self.conn = pika.BlockingConnection(broker.params)
            self.ch = self.conn.channel()
            self.ch.exchange_declare(EVENT_EXCHANGE, exchange_type="topic", durable=True)
            declared = self.ch.queue_declare("", exclusive=True, auto_delete=True, arguments={
                "x-max-length-bytes": channel.max_len * EVENT_BYTES, "x-overflow": "drop-head"})
            self.queue = declared.method.queue
            self.ch.queue_bind(self.queue, EVENT_EXCHANGE, routing_key="#")
            # Few batches in flight: the rest wait in the queue, where its bound applies (with
            # auto-ack RabbitMQ would push everything into this socket's buffers at once).
            self.ch.basic_qos(prefetch_count=EVENT_PREFETCH)
            self.ch.basic_consume(self.queue, self._on_batch)
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise OperationalError(f"cannot subscribe to events on RabbitMQ at {self.safe_url}: {exc!r}") from exc

    def next_batch(self, timeout: float) -> list[bytes]:
        deadline = time.monotonic() + timeout
        try:
            self.conn.process_data_events(time_limit=0)  # what already arrived
            while not self._got and (remaining := deadline - time.monotonic()) > 0:
                self.conn.process_data_events(time_limit=min(remaining, 1.0))
            out = list(self._got)
            self._got.clear()
            return out
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise OperationalError(f"lost the connection to RabbitMQ at {self.safe_url} while reading "
                                   f"events: {exc!r}") from exc

    def _on_batch(self, ch: Any, method: Any, props: Any, body: bytes) -> None:
        self._got.extend(self._unpack(props, body))
        ch.basic_ack(method.delivery_tag)

    def _unpack(self, props: Any, body: bytes) -> list[bytes]:
        headers = props.headers or {}
        sender, first, count = headers.get("sender"), headers.get("first"), headers.get("count")
        if isinstance(sender, bytes):
            sender = sender.decode()
        if sender is not None and first is not None and count is not None:
            expected = self._next.get(str(sender))
            if expected is None and int(headers.get("since") or 0) >= self.subscribed:
                expected = 1  # a sender that started after we subscribed: we should have had all of it
            if expected is not None and int(first) > expected:
                self.missed += int(first) - expected
            self._next[str(sender)] = int(first) + int(count)
        return unframe_events(body)

    def close(self) -> None:
        try:
            if self.conn.is_open:
                self.conn.close()
        except Exception:  # a broken connection: it is gone either way
            pass


# Headers that RabbitMQ (dead-lettering: x-death, x-first-death-*, x-last-death-*) or this
# transport (x-celeriac-*: crash count, dead-letter reason) put on one trip of a message.
# They describe that trip, not the task, so a delivery never turns them into task headers:
# a message built again from a task's request (a retry, a rate-limit deferral, an ETA
# re-delay) would carry the old x-death, and RabbitMQ's dead-letter cycle detection silently
# drops a message that expires out of a delay level its x-death already names.
_TRIP_HEADER_PREFIXES = ("x-death", "x-first-death-", "x-last-death-", "x-celeriac-")


def _task_headers(headers: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (headers or {}).items() if not k.startswith(_TRIP_HEADER_PREFIXES)}


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
