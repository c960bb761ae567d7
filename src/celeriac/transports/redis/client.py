"""Redis plumbing shared by the Redis broker and result store: URLs, clients, scripts, errors.

Three topologies, one code path: a single server (redis://, rediss://, unix://), Redis
Cluster (redis+cluster://), and a master watched by Redis Sentinel (sentinel://). Every key
name is in `keys.py`; keys one script touches share a hash tag, and calls that span
several tags are split by hash slot on a cluster (`slot_groups`).
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, Sequence, TypeVar

from ...brokers.base import (EventChannel, EventSubscription, LeaseState, Outgoing, Publisher, ScheduleStore, Tick,
                           clamp_priority, safe_url, frame_events, unframe_events)
from .keys import Keys
from .publish import pack
from .topology import cluster_client, is_cluster, is_cluster_url, is_sentinel_url, sentinel_client
from ...exceptions import ImproperlyConfigured, OperationalError

T = TypeVar("T")

try:
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry
except ImportError:  # pragma: no cover - only without the redis extra
    redis = None  # type: ignore[assignment]


def _require_redis() -> None:
    if redis is None:
        raise ImproperlyConfigured("the Redis transport needs the redis client: pip install 'celeriac[redis]'")


_CLIENTS: dict[tuple[str, int], Any] = {}
_WAITS: dict[int, tuple[int, int]] = {}  # id(client) -> (replicas, timeout ms): `wait_replicas`


def client_for(url: str, options: dict[str, Any]) -> Any:
    """One redis-py client (and so one connection pool) per URL and process: a plain client,
    a RedisCluster (redis+cluster://) or a Sentinel-managed master (sentinel://)."""
    _require_redis()
    import os
    key = (url + repr(sorted((k, repr(v)) for k, v in options.items())), os.getpid())
    found = _CLIENTS.get(key)
    if found is None:
        # Short transient failures are retried inside redis-py; longer outages are the
        # caller's to ride out (workers back off and retry, clients per publish policy).
        kwargs = {**client_options(url, options), "retry": Retry(ExponentialBackoff(cap=0.5, base=0.02), 3)}
        if is_cluster_url(url):
            if options.get("wait_replicas"):
                raise ImproperlyConfigured("wait_replicas is not offered on Redis Cluster (docs/redis-topologies.md)")
            found = make_client(url, lambda: cluster_client(url, kwargs))
        elif is_sentinel_url(url):
            found = make_client(url, lambda: sentinel_client(url, options, kwargs))
        else:
            if url.startswith("redis://"):  # plain TCP: its replies are looked for (looking.py)
                from .looking import LookingConnection
                kwargs.update(connection_class=LookingConnection,
                              reply_spin_us=float(options.get("reply_spin_us", 100)))
            found = make_client(url, lambda: redis.Redis.from_url(url, **kwargs))
        replicas = int(options.get("wait_replicas") or 0)
        if replicas > 0:
            _WAITS[id(found)] = (replicas, max(1, int(float(options.get("wait_replicas_timeout", 1.0)) * 1000)))
        _CLIENTS[key] = found
    return found


def replica_wait(client: Any) -> tuple[int, int] | None:
    """(replicas, timeout ms) a write on this client must be confirmed by (`wait_replicas`), or None."""
    return _WAITS.get(id(client))


def close_client(client: Any) -> None:
    """Drop a client's connections; the client stays usable (it is shared per URL and process).
    RedisCluster.close() would forget the cluster's layout, so its pools are closed instead."""
    if is_cluster(client):
        client.disconnect_connection_pools()
    else:
        client.close()


def client_options(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """redis-py keyword arguments from the transport options (shared with the asyncio client)."""
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": float(options.get("socket_connect_timeout", 5.0)),
        "socket_timeout": float(options.get("socket_timeout", 30.0)),
        "health_check_interval": int(options.get("health_check_interval", 25)),
        "retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                           redis.exceptions.BusyLoadingError],
    }
    if not url.startswith("unix:"):
        kwargs["socket_keepalive"] = True  # TCP only: notices a vanished server on idle links
    for name in ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "max_connections"):
        if name in options:
            kwargs[name] = options[name]
    return kwargs


def make_client(url: str, build: Callable[[], T]) -> T:
    try:
        return build()
    except ValueError as exc:
        raise ImproperlyConfigured(f"bad Redis URL {safe_url(url)!r}: {exc} (forms: redis://[:password@]host"
                                   "[:port][/db], rediss://... for TLS, unix:///path/to/socket?db=0, "
                                   "redis+cluster://host:port[;host2:port2], "
                                   "sentinel://host:26379[;sentinel://host2:26379] with master_name)") from None
    except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as exc:
        # RedisCluster learns the cluster's layout when it is made: an unreachable cluster fails here.
        raise OperationalError(f"cannot reach Redis at {safe_url(url)} (connect): {exc}") from None


def key_prefix(options: dict[str, Any]) -> str:
    return str(options.get("global_keyprefix") or options.get("key_prefix") or "celeriac")


def kombu_prefix(options: dict[str, Any]) -> str:
    """What kombu and Celery put in front of their Redis keys: the same `global_keyprefix`
    option, as it is (kombu adds no separator), and nothing by default."""
    return str(options.get("global_keyprefix") or options.get("key_prefix") or "")


def guarded(url: str, what: str, fn: Callable[[], T]) -> T:
    """Run a Redis call; turn client errors into an OperationalError that says where and what."""
    _require_redis()
    started = time.monotonic()
    try:
        return fn()
    except redis.exceptions.RedisError as exc:
        translated = redis_error(url, what, exc, started)
        if translated is exc:
            raise
        raise translated from exc


def redis_error(url: str, what: str, exc: BaseException, started: float) -> BaseException:
    """The error a person reads for a failed Redis call (shared with the asyncio client);
    errors that are not the server's or the connection's are returned as they are."""
    from redis.sentinel import MasterNotFoundError
    if isinstance(exc, MasterNotFoundError):  # its own text is the repr of a client: not for people
        master = str(exc).split("'")[1] if str(exc).count("'") >= 2 else "?"
        return OperationalError(
            f"no Redis master {master!r} found through the sentinels at {safe_url(url)} ({what}; retried for "
            f"{time.monotonic() - started:.1f}s): no sentinel answered, or none knows a live master by that name")
    if isinstance(exc, redis.exceptions.AuthenticationError):
        return OperationalError(f"Redis at {safe_url(url)} refused the credentials ({what}): {exc}")
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                        redis.exceptions.BusyLoadingError)):
        return OperationalError(
            f"cannot reach Redis at {safe_url(url)} ({what}; retried for {time.monotonic() - started:.1f}s): {exc}")
    if isinstance(exc, redis.exceptions.ResponseError):
        text = str(exc)
        if "NOAUTH" in text or "WRONGPASS" in text or "invalid password" in text:
            return OperationalError(f"Redis at {safe_url(url)} refused the credentials ({what}): {text}")
        return OperationalError(f"Redis at {safe_url(url)} answered an error to {what}: {text}")
    return exc


def pipelined(client: Any, *commands: tuple[Any, ...]) -> list[Any]:
    """Several plain commands in one round trip on a pooled connection (no MULTI, no Lua);
    on a cluster, one round trip per node that holds their keys."""
    if is_cluster(client):
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute())
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command(pack(conn, commands))
        return [conn.read_response() for _ in commands]
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def transaction(client: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Plain commands as one MULTI/EXEC, in one round trip (a single server: kombu's lists are
    never used on a cluster); with `wait_replicas` a WAIT follows in the same round trip and a
    write the replicas did not confirm is an error, as for the scripts. -> EXEC's replies."""
    wait = replica_wait(client)
    replies = pipelined(client, ("MULTI",), *commands, ("EXEC",), *([("WAIT", *wait)] if wait else []))
    if wait is not None and int(replies[-1]) < wait[0]:
        raise not_replicated(int(replies[-1]), *wait)
    return list(replies[len(commands) + 1] or [])


def not_replicated(confirmed: int, replicas: int, timeout_ms: int) -> Exception:
    return redis.exceptions.ResponseError(
        f"NOTREPLICATED the write is on the master but only {confirmed} of {replicas} replica(s) confirmed "
        f"it within {timeout_ms} ms (wait_replicas): it may be lost if the master fails now")


class Script:
    """EVALSHA over a pooled connection, with its keys declared in KEYS[].

    redis-py's generic command path (retry wrapper, instrumentation) costs ~25 µs per call
    here, a third of a loopback round trip; these scripts run on every publish, fetch, ack
    and result write, so they talk to the connection directly. Transient connection errors
    are retried like redis-py would; a server that lost its script cache gets it again.
    On a cluster RedisCluster routes the call to the node of its keys' slot (and follows
    MOVED while slots migrate). With `wait_replicas`, a WAIT rides in the same round trip
    and a write not confirmed by that many replicas is reported as an error.
    """

    ATTEMPTS = 4

    def __init__(self, client: Any, source: str, writes: bool = True) -> None:
        import hashlib
        self.client = client
        self.cluster = is_cluster(client)
        self.pool = None if self.cluster else client.connection_pool
        self.wait = replica_wait(client) if writes else None  # a script that only reads has nothing to confirm
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def _once(self, args: list[Any], keys: Sequence[str]) -> Any:
        if self.cluster:
            try:
                return self.client.evalsha(self.sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                return self.client.eval(self.source, len(keys), *keys, *args)  # caches it on that node
        conn = self.pool.get_connection()  # type: ignore[union-attr]
        try:
            reply = self._send(conn, ("EVALSHA", self.sha, len(keys), *keys, *args))
            if reply is _NO_SCRIPT:
                conn.send_command("SCRIPT", "LOAD", self.source)
                conn.read_response()
                reply = self._send(conn, ("EVALSHA", self.sha, len(keys), *keys, *args))
            return reply
        except BaseException as exc:
            if not isinstance(exc, redis.exceptions.ResponseError):
                conn.disconnect()  # never hand back a connection with a reply still in flight
            raise
        finally:
            self.pool.release(conn)  # type: ignore[union-attr]

    def _send(self, conn: Any, command: tuple[Any, ...]) -> Any:
        """One EVALSHA (and its WAIT), every reply read before anything is raised."""
        if self.wait is None:
            conn.send_command(*command)
            try:
                return conn.read_response()
            except redis.exceptions.NoScriptError:
                return _NO_SCRIPT
        replicas, timeout_ms = self.wait
        conn.send_packed_command(conn.pack_commands([command, ("WAIT", replicas, timeout_ms)]))
        error: BaseException | None = None
        try:
            reply = conn.read_response()
        except redis.exceptions.NoScriptError:
            reply = _NO_SCRIPT
        except redis.exceptions.ResponseError as exc:
            reply, error = None, exc
        confirmed = int(conn.read_response())
        if error is not None:
            raise error
        if reply is not _NO_SCRIPT and confirmed < replicas:
            raise not_replicated(confirmed, replicas, timeout_ms)
        return reply

    def __call__(self, args: list[Any], keys: Sequence[str] = ()) -> Any:
        """Run with `keys` as KEYS[] (the keys it touches, declared) and `args` as ARGV[]."""
        delay = 0.02
        for attempt in range(self.ATTEMPTS):
            try:
                return self._once(args, keys)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                    redis.exceptions.BusyLoadingError):
                if attempt == self.ATTEMPTS - 1:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        raise AssertionError("unreachable")


_NO_SCRIPT = object()  # the server did not know the script (restarted, or SCRIPT FLUSH)


class RedisScheduleStore(ScheduleStore):
    """Beat's lease and ticks on the Redis server, under the key prefix. With the Redis
    broker (`publish` None) one script checks the lease, records the ticks and pushes their
    messages: all or nothing. With another broker (RabbitMQ), or on Redis Cluster (where the
    queues' keys are in other hash slots than the schedule's), the script records the ticks
    with their messages as pending, then the messages are published and the pending copies
    dropped; a leader that dies in between leaves them for the next one (`recover`), so a
    tick may be sent twice in that window but never lost."""

    def __init__(self, url: str, client: Any, prefix: str, name: str, publish: Publisher | None) -> None:
        from . import scripts as lua
        self.url, self.client, self.name, self.publish = url, client, name, publish
        self.keys = Keys(prefix)
        self._lease = Script(client, lua.BEAT_LEASE)
        self._release = Script(client, lua.BEAT_RELEASE)
        self._fire = Script(client, lua.BEAT_FIRE)
        self.lease_key, self.ticks_key, self.pending_key = self.keys.beat(name)

    def _call(self, what: str, script: Script, args: list[Any], queue_keys: Sequence[str] = ()) -> Any:
        keys = [self.lease_key, self.ticks_key, self.pending_key, *queue_keys]
        return guarded(self.url, what, lambda: script(args, keys))

    def lease(self, holder: str, ttl: float) -> int | None:
        token = int(self._call("take the beat lease", self._lease, [holder, max(1, int(ttl * 1000))]))
        return None if token < 0 else token

    def release(self, holder: str) -> None:
        self._call("release the beat lease", self._release, [holder])

    def lease_state(self) -> LeaseState:
        (holder, token, expires), (secs, micros) = guarded(self.url, "read the beat lease", lambda: pipelined(
            self.client, ("HMGET", self.lease_key, "holder", "token", "expires"), ("TIME",)))
        expires_in = (float(expires or 0) - (int(secs) * 1000 + int(micros) // 1000)) / 1000
        name = holder.decode() if isinstance(holder, bytes) else holder
        return LeaseState(name if expires_in > 0 else None, int(token or 0), expires_in)

    def last_ticks(self) -> dict[str, float]:
        raw = guarded(self.url, "read beat ticks", lambda: self.client.hgetall(self.ticks_key))
        return {_text(k): float(v) for k, v in raw.items()}

    def fire(self, holder: str, token: int, ticks: Sequence[Tick]) -> list[str] | None:
        args: list[Any] = [holder, token, "claim" if self.publish else "publish"]
        blocks: dict[str, int] = {}
        for tick in ticks:
            m = tick.message
            block = blocks.setdefault(m.queue, len(blocks) + 1) if m and not self.publish else 0
            args += [tick.entry, repr(float(tick.at)), block, m.queue if m else "",
                     clamp_priority(m.priority if m else 0), int(m.eta * 1000) if m and m.eta else 0,
                     m.payload if m else b""]
        queue_keys = [k for queue in blocks for k in self.keys.queue(queue).publish_block()]
        reply = self._call("fire periodic tasks", self._fire, args, queue_keys)
        if not isinstance(reply, list):
            return None
        recorded = [ticks[int(i)] for i in reply]
        if self.publish is not None:
            self._publish_claimed(self.publish, [t for t in recorded if t.message is not None])
        return [t.entry for t in recorded]

    def _publish_claimed(self, publish: Publisher, claimed: list[Tick]) -> None:
        """Claim mode: publish what this call recorded, then drop the pending copies. Only
        these - another caller's pending ticks are theirs (or, if they died, recover()'s)."""
        if not claimed:
            return
        publish([t.message for t in claimed if t.message is not None])
        fields = [f"{t.entry}@{float(t.at)!r}" for t in claimed]
        guarded(self.url, "confirm beat ticks", lambda: self.client.hdel(self.pending_key, *fields))

    def recover(self) -> int:
        if self.publish is None:
            return 0
        pending = guarded(self.url, "read pending beat ticks", lambda: self.client.hgetall(self.pending_key))
        if not pending:
            return 0
        messages = []
        for raw in pending.values():
            queue, priority, eta_ms, payload = bytes(raw).split(b"\n", 3)
            messages.append(Outgoing(queue.decode(), payload, int(priority), int(eta_ms) / 1000 or None))
        self.publish(messages)
        guarded(self.url, "confirm beat ticks", lambda: self.client.hdel(self.pending_key, *pending.keys()))
        return len(messages)


def reply_text(value: Any) -> str:
    """A reply's bytes (or a number) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


_text = reply_text


def score_pairs(reply: Any) -> list[tuple[Any, Any]]:
    """(member, score) pairs of a raw WITHSCORES reply: flat in RESP2, pairs in RESP3."""
    if reply and isinstance(reply[0], (list, tuple)):
        return [(m, s) for m, s in reply]
    return list(zip(reply[::2], reply[1::2], strict=True))


def _seq_of(fields: Any) -> int | None:
    """The 'e' field of a stream entry (XREAD gives a dict; raw XREVRANGE a flat list)."""
    if isinstance(fields, list):
        fields = dict(zip(fields[::2], fields[1::2], strict=False))
    value = fields.get(b"e") if isinstance(fields, dict) else None
    return int(value) if value is not None else None


class RedisEventChannel(EventChannel):
    """Events in a Redis stream (`<prefix>:{events}`): one stream entry per batch (the events,
    each prefixed with its length), so a busy worker costs Redis one script call per flush,
    not one per event. Each XADD trims the stream to `max_len` events' worth of entries of
    its size (at least its own).
    Readers block in XREAD from where they started."""

    def __init__(self, url: str, client: Any, prefix: str, max_len: int) -> None:
        from .scripts import EVENTS_XADD
        keys = Keys(prefix)
        self.url, self.client, self.key, self.max_len = url, client, keys.events, max(100, int(max_len))
        self.seq_key = keys.events_seq
        self._xadd = Script(client, EVENTS_XADD)

    def send(self, events: Sequence[bytes]) -> None:
        if events:
            entries = max(1, self.max_len // len(events))  # never more than max_len events, or one batch
            framed = frame_events(events)
            args = [entries, len(events), framed]
            guarded(self.url, "send events", lambda: self._xadd(args, [self.key, self.seq_key]))

    def subscribe(self) -> EventSubscription:
        return _RedisEventSubscription(self)


class _RedisEventSubscription(EventSubscription):
    _BLOCK_CHUNK = 1.0  # seconds per XREAD: well under the client's socket timeout

    def __init__(self, channel: RedisEventChannel) -> None:
        self.channel = channel
        newest, seq = guarded(channel.url, "subscribe to events", lambda: pipelined(
            channel.client, ("XREVRANGE", channel.key, "+", "-", "COUNT", 1), ("GET", channel.seq_key)))
        self.last_id: Any = newest[0][0] if newest else b"0-0"
        # The number of the last event sent before we subscribed: the next one we read should follow it.
        self.last_seq = _seq_of(newest[0][1]) if newest else None
        if self.last_seq is None:
            self.last_seq = int(seq) if seq else 0
        self.missed = 0

    def _count_gap(self, fields: dict[bytes, bytes]) -> None:
        last, count = _seq_of(fields), fields.get(b"n")
        if last is None or count is None:  # an entry from a writer that does not number events
            return
        first = last - int(count) + 1
        if self.last_seq is not None and first > self.last_seq + 1:
            self.missed += first - self.last_seq - 1
        self.last_seq = max(last, self.last_seq or 0)

    def next_batch(self, timeout: float) -> list[bytes]:
        ch = self.channel
        deadline = time.monotonic() + timeout
        while True:
            block = max(1, int(min(self._BLOCK_CHUNK, max(0.0, deadline - time.monotonic())) * 1000))
            read = functools.partial(ch.client.xread, {ch.key: self.last_id}, count=2000, block=block)
            reply = guarded(ch.url, "read events", read)
            if reply:
                entries = reply[0][1]
                if entries:
                    self.last_id = entries[-1][0]
                    for _id, fields in entries:
                        self._count_gap(fields)
                    return [event for _id, fields in entries for event in unframe_events(fields.get(b"b", b""))]
            if time.monotonic() >= deadline:
                return []
