"""The Redis publish path's own connection: one per thread, kept, written to directly.

A `delay()` is one round trip to Redis, and on loopback that round trip costs less than
redis-py's machinery around it: checking a connection out of the pool polls the socket
(a system call) and records metrics, and its Pipeline object and command packing cost as
much again. Publishing is the hottest client-side call, so it keeps one connection per
thread (made anew after a fork), packs its commands with hiredis when it is installed, and
reads every reply before returning: a returned publish means Redis has the message.

Connection errors are retried like `_redis.Script` retries them (a few attempts, growing
pauses); any other failure drops the connection, so a half-read reply never leaks into the
next call.

Waiting for the reply, the thread looks at its socket for a short while before it sleeps
(looking.py).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

import redis

from .looking import LookingConnection, ReplySpin

if TYPE_CHECKING:
    from .client import Script

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - redis-py without its C parser: its own packer
    _hiredis_pack = None


def pack(conn: Any, commands: Sequence[tuple[Any, ...]]) -> list[bytes]:
    """The commands in Redis' protocol, as the chunks `send_packed_command` writes: by hiredis
    when it is installed (redis-py's own packer checks each argument in Python, a quarter
    of the cost of writing a batch of hundreds of history records)."""
    if _hiredis_pack is not None:
        return [b"".join([_hiredis_pack(command) for command in commands])]
    return conn.pack_commands(commands)  # type: ignore[no-any-return]

T = TypeVar("T")
_TRANSIENT = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError)


class PublishLink:
    """Per-thread connections to the server of `client`, for publishing."""

    ATTEMPTS = 4

    def __init__(self, client: Any, spin_us: float = 100) -> None:
        self.pool = client.connection_pool
        self.spin_us = spin_us
        self._local = threading.local()
        self._made: weakref.WeakSet[Any] = weakref.WeakSet()  # to close them all in close()

    def _connection(self) -> Any:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():  # a forked child never shares its parent's socket
            pool = self.pool
            conn = pool.connection_class(**pool.connection_kwargs)
            local.conn, local.pid = conn, os.getpid()
            local.spin = ReplySpin(self.spin_us)
            self._made.add(conn)
        return conn

    def _send(self, conn: Any, commands: Sequence[tuple[Any, ...]]) -> None:
        conn.send_packed_command(pack(conn, commands))
        if not isinstance(conn, LookingConnection):  # which looks by itself
            self._local.spin.wait(conn)

    def _attempts(self, once: Callable[[Any], T]) -> T:
        delay = 0.02
        for attempt in range(self.ATTEMPTS):
            conn = self._connection()
            try:
                return once(conn)
            except _TRANSIENT:
                conn.disconnect()  # the next send connects again
                if attempt == self.ATTEMPTS - 1:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
            except redis.exceptions.ResponseError:
                raise  # a whole reply was read: the connection is clean
            except BaseException:
                conn.disconnect()  # never keep a connection with a reply still in flight
                raise
        raise AssertionError("unreachable")

    def transaction(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """MULTI, the commands, EXEC, in one write; returns EXEC's replies. An error reply
        from a command inside raises it (after every reply was read)."""
        wrapped = [("MULTI",), *commands, ("EXEC",)]

        def once(conn: Any) -> list[Any]:
            self._send(conn, wrapped)
            try:
                replies = [conn.read_response() for _ in wrapped]
            except redis.exceptions.ResponseError:
                conn.disconnect()  # replies after the failed one are still unread
                raise
            return list(replies[-1] or ())

        results = self._attempts(once)
        failed = next((r for r in results if isinstance(r, redis.exceptions.ResponseError)), None)
        if failed is not None:  # e.g. a key holding another type
            raise failed
        return results

    def pipeline(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """The commands in one write, without MULTI/EXEC (Redis runs them in order, though
        another client's may come between); their replies. An error reply raises it."""
        def once(conn: Any) -> list[Any]:
            self._send(conn, commands)
            try:
                return [conn.read_response() for _ in commands]
            except redis.exceptions.ResponseError:
                conn.disconnect()  # replies after the failed one are still unread
                raise

        return self._attempts(once)

    def script(self, script: "Script", args: Sequence[Any], keys: Sequence[str] = ()) -> Any:
        """EVALSHA of `script` (loaded first if the server lost its script cache)."""
        def once(conn: Any) -> Any:
            call = ("EVALSHA", script.sha, len(keys), *keys, *args)
            self._send(conn, [call])
            try:
                return conn.read_response()
            except redis.exceptions.NoScriptError:
                conn.send_packed_command(pack(conn, [("SCRIPT", "LOAD", script.source), call]))
                conn.read_response()
                return conn.read_response()

        return self._attempts(once)

    def close(self) -> None:
        for conn in list(self._made):
            conn.disconnect()
