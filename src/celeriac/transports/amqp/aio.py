"""The asyncio client for RabbitMQ, on aiormq (the asyncio AMQP 0-9-1 client under aio-pika).

It declares what the blocking broker declares (durable priority queues, the delay levels)
and publishes the same messages, through the same functions (wire.py), with
publisher confirms: `await ...adelay()` returns once RabbitMQ has stored the message. A
batch (a group) is published as many confirmed messages at once and awaited together,
one round trip for all of them (the blocking broker uses a transaction for the same).
"""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

from .broker import AMQPBroker
from .wire import Declare, route_plan, wire_fields
from ...brokers.base import Outgoing, clamp_priority
from ...exceptions import ImproperlyConfigured, OperationalError
from ...aio.base import BatchingBroker

try:
    import aiormq
    import aiormq.exceptions
    from pamqp.commands import Basic
except ImportError:  # pragma: no cover - only without the asyncio extra
    aiormq = None  # type: ignore[assignment]


class AsyncAMQPBroker(BatchingBroker):
    sync: AMQPBroker

    def __init__(self, sync: AMQPBroker) -> None:
        super().__init__(sync)
        if aiormq is None:
            raise ImproperlyConfigured("the asyncio client for RabbitMQ needs aiormq: pip install 'celeriac[asyncio]'")
        self._conn: Any = None
        self._channel: Any = None
        self._declared: set[tuple[str, str, str, str]] = set()
        self._connecting = asyncio.Lock()

    def _url(self, params: Any) -> str:
        from urllib.parse import quote
        creds = params.credentials
        scheme = "amqps" if params.ssl_options is not None else "amqp"
        vhost = quote(params.virtual_host, safe="")
        return (f"{scheme}://{quote(creds.username, safe='')}:{quote(creds.password, safe='')}@"
                f"{params.host}:{params.port}/{vhost}")

    async def _open(self) -> Any:
        if self._channel is not None and not self._channel.is_closed:
            return self._channel
        async with self._connecting:  # many concurrent first publishes: one connection
            if self._channel is not None and not self._channel.is_closed:
                return self._channel
            await self._drop()
            failures = []
            endpoints = self.sync.endpoints  # a failover URL: the node in use first, then the others
            for step in range(len(endpoints)):
                index = (self.sync._active + step) % len(endpoints)
                params = endpoints[index]
                kwargs = {"context": params.ssl_options.context} if params.ssl_options is not None else {}
                try:
                    self._conn = await aiormq.connect(self._url(params), **kwargs)
                    self._channel = await self._conn.channel(publisher_confirms=True)
                except aiormq.exceptions.ProbableAuthenticationError as exc:
                    raise OperationalError(self.sync._refused(str(exc))) from exc
                except (aiormq.exceptions.AMQPError, OSError) as exc:
                    failures.append(f"{params.host}:{params.port}: {exc!r}")
                    await self._drop()
                    continue
                self._declared.clear()
                return self._channel
            raise OperationalError(f"cannot reach RabbitMQ at {self.sync.safe_url} ({'; '.join(failures)})")

    async def _apply(self, channel: Any, declarations: Sequence[Declare]) -> None:
        for d in declarations:
            if d.key in self._declared:
                continue
            if d.kind == "exchange":
                await channel.exchange_declare(d.name, exchange_type=d.exchange_type, durable=True)
            elif d.kind == "queue":
                await channel.queue_declare(d.name, durable=True, arguments=d.arguments)
            elif d.kind == "shared_queue":
                await self._declare_shared(channel, d)
            elif d.kind == "bind_queue":
                await channel.queue_bind(d.name, d.source, routing_key=d.routing_key)
            else:
                await channel.exchange_bind(d.name, d.source, routing_key=d.routing_key)
            self._declared.add(d.key)

    async def _declare_shared(self, channel: Any, d: Declare) -> None:
        """A queue shared with Celery: used as it is when it exists, else declared as Celery
        would (wire.py); the probe's channel is closed by RabbitMQ on a 404."""
        probe = await self._conn.channel()
        try:
            await probe.queue_declare(d.name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            await channel.queue_declare(d.name, durable=True, arguments=d.arguments)
        else:
            await probe.close()

    async def publish_batch(self, messages: Sequence[Outgoing]) -> None:
        if not messages:
            return
        try:
            channel = await self._open()
            sends = []
            for message in messages:
                declarations, exchange, key = route_plan(message, shared=self.sync.wire)
                await self._apply(channel, declarations)
                fields, body = wire_fields(message.payload, clamp_priority(message.priority))
                sends.append(channel.basic_publish(body, exchange=exchange, routing_key=key, mandatory=True,
                                                   properties=Basic.Properties(**fields)))
            confirms = await asyncio.gather(*sends)
        except aiormq.exceptions.PublishError as exc:
            raise OperationalError(f"RabbitMQ at {self.sync.safe_url} could not route a message: {exc}") from exc
        except aiormq.exceptions.ChannelClosed as exc:
            await self._drop()
            raise OperationalError(f"RabbitMQ at {self.sync.safe_url} closed the channel during publish: "
                                   f"{exc}") from exc
        except (aiormq.exceptions.AMQPError, ConnectionError, OSError) as exc:
            await self._drop()
            raise OperationalError(f"lost the connection to RabbitMQ at {self.sync.safe_url} during publish: "
                                   f"{exc!r}") from exc
        if any(not isinstance(c, Basic.Ack) for c in confirms):
            await self._drop()  # as the blocking broker: a channel a quorum queue nacked starts afresh
            raise OperationalError(f"RabbitMQ at {self.sync.safe_url} refused to store a message (nack)")

    async def _drop(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # closing a broken connection may fail again; it is gone either way
                pass

    async def close(self) -> None:
        await self._drop()
