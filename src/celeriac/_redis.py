"""Redis plumbing shared by the Redis broker and result store: URLs, clients, key names, errors.

Every key celeriac writes to Redis is named here, under one prefix (default "celeriac"),
so two apps can share a server with different `global_keyprefix` options.
"""

from __future__ import annotations

import time
from typing import Any, Callable, TypeVar

from .brokers.base import safe_url
from .exceptions import ImproperlyConfigured, OperationalError

T = TypeVar("T")

try:
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry
except ImportError:  # pragma: no cover - only without the redis extra
    redis = None  # type: ignore[assignment]


class Keys:
    def __init__(self, prefix: str) -> None:
        p = prefix.rstrip(":") or "celeriac"
        self.prefix = p
        self.seq = f"{p}:seq"                    # message ids, increasing: FIFO order within a priority
        self.payload = f"{p}:payload"            # id -> packed message
        self.route = f"{p}:route"                # id -> "priority:queue"
        self.deliveries = f"{p}:deliveries"      # id -> times delivered
        self.delayed = f"{p}:delayed"            # zset id by eta (ms, server clock)
        self.workers = f"{p}:workers"            # zset worker id by lease expiry (ms)
        self.workerinfo = f"{p}:workerinfo"      # worker id -> JSON from its heartbeat
        self.holders = f"{p}:holders"            # set of workers that may hold messages
        self.dead = f"{p}:dead"                  # zset dead-letter id by time
        self.dead_payload = f"{p}:dead:payload"
        self.dead_info = f"{p}:dead:info"
        self.dead_seq = f"{p}:dead:seq"

    def ready(self, queue: str) -> str:          # zset id by (9 - priority) * 1e12 + id
        return f"{self.prefix}:ready:{queue}"

    def signal(self, queue: str) -> str:         # list of wake-up tokens for idle workers (bounded)
        return f"{self.prefix}:signal:{queue}"

    def held(self, owner: str) -> str:           # hash id -> worker: what one pool slot holds
        return f"{self.prefix}:held:{owner}"

    def owners(self, worker: str) -> str:        # set of a worker's pool slots that held messages
        return f"{self.prefix}:owners:{worker}"

    def result(self, task_id: str) -> str:       # hash status, meta
        return f"{self.prefix}:r:{task_id}"

    def done(self, task_id: str) -> str:         # list holding the final meta; waiters BLMOVE it onto itself
        return f"{self.prefix}:done:{task_id}"


def _require_redis() -> None:
    if redis is None:
        raise ImproperlyConfigured("the Redis transport needs the redis client: pip install 'celeriac[redis]'")


_CLIENTS: dict[tuple[str, int], Any] = {}


def client_for(url: str, options: dict[str, Any]) -> Any:
    """One redis-py client (and so one connection pool) per URL and process."""
    _require_redis()
    import os
    key = (url + repr(sorted((k, repr(v)) for k, v in options.items())), os.getpid())
    found = _CLIENTS.get(key)
    if found is None:
        kwargs: dict[str, Any] = {
            "socket_connect_timeout": float(options.get("socket_connect_timeout", 5.0)),
            "socket_timeout": float(options.get("socket_timeout", 30.0)),
            "health_check_interval": int(options.get("health_check_interval", 25)),
            # Short transient failures are retried inside redis-py; longer outages are the
            # caller's to ride out (workers back off and retry, clients per publish policy).
            "retry": Retry(ExponentialBackoff(cap=0.5, base=0.02), 3),
            "retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                               redis.exceptions.BusyLoadingError],
        }
        if not url.startswith("unix:"):
            kwargs["socket_keepalive"] = True  # TCP only: notices a vanished server on idle links
        for name in ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "max_connections"):
            if name in options:
                kwargs[name] = options[name]
        try:
            found = redis.Redis.from_url(url, **kwargs)
        except ValueError as exc:
            raise ImproperlyConfigured(f"bad Redis URL {safe_url(url)!r}: {exc} (forms: redis://[:password@]host"
                                       "[:port][/db], rediss://... for TLS, unix:///path/to/socket?db=0)") from None
        _CLIENTS[key] = found
    return found


def key_prefix(options: dict[str, Any]) -> str:
    return str(options.get("global_keyprefix") or options.get("key_prefix") or "celeriac")


def guarded(url: str, what: str, fn: Callable[[], T]) -> T:
    """Run a Redis call; turn client errors into an OperationalError that says where and what."""
    _require_redis()
    started = time.monotonic()
    try:
        return fn()
    except redis.exceptions.AuthenticationError as exc:
        raise OperationalError(f"Redis at {safe_url(url)} refused the credentials ({what}): {exc}") from exc
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
            redis.exceptions.BusyLoadingError) as exc:
        raise OperationalError(
            f"cannot reach Redis at {safe_url(url)} ({what}; retried for {time.monotonic() - started:.1f}s): "
            f"{exc}") from exc
    except redis.exceptions.ResponseError as exc:
        text = str(exc)
        if "NOAUTH" in text or "WRONGPASS" in text or "invalid password" in text:
            raise OperationalError(f"Redis at {safe_url(url)} refused the credentials ({what}): {text}") from exc
        raise OperationalError(f"Redis at {safe_url(url)} answered an error to {what}: {text}") from exc


def pipelined(client: Any, *commands: tuple[Any, ...]) -> list[Any]:
    """Several plain commands in one round trip on a pooled connection (no MULTI, no Lua)."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command(conn.pack_commands(commands))
        return [conn.read_response() for _ in commands]
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


class Script:
    """EVALSHA over a pooled connection.

    redis-py's generic command path (retry wrapper, instrumentation) costs ~25 µs per call
    here, a third of a loopback round trip; these scripts run on every publish, fetch, ack
    and result write, so they talk to the connection directly. Transient connection errors
    are retried like redis-py would; a server that lost its script cache gets it again.
    """

    ATTEMPTS = 4

    def __init__(self, client: Any, source: str) -> None:
        import hashlib
        self.pool = client.connection_pool
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def _once(self, args: list[Any]) -> Any:
        conn = self.pool.get_connection()
        try:
            conn.send_command("EVALSHA", self.sha, 0, *args)
            try:
                return conn.read_response()
            except redis.exceptions.NoScriptError:
                conn.send_command("SCRIPT", "LOAD", self.source)
                conn.read_response()
                conn.send_command("EVALSHA", self.sha, 0, *args)
                return conn.read_response()
        except BaseException as exc:
            if not isinstance(exc, redis.exceptions.ResponseError):
                conn.disconnect()  # never hand back a connection with a reply still in flight
            raise
        finally:
            self.pool.release(conn)

    def __call__(self, args: list[Any]) -> Any:
        delay = 0.02
        for attempt in range(self.ATTEMPTS):
            try:
                return self._once(args)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                    redis.exceptions.BusyLoadingError):
                if attempt == self.ATTEMPTS - 1:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        raise AssertionError("unreachable")
