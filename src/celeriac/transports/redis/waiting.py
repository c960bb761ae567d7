"""A BLPOP that ends on time.

Redis looks at blocked clients' timeouts on its timer tick, every 1000/hz ms: 100 ms at the
default `hz 10`. A worker that waits for a delayed task due in 30 ms would wake 100 ms later
on an idle server, so countdowns, ETAs and rate-limit slots ran up to 100 ms late, and tasks
whose slots were 50 ms apart started in bunches. Here the client keeps the deadline: it sends
the BLPOP, watches the socket until the deadline, and when nothing came it ends the wait with
CLIENT UNBLOCK from another pooled connection (one round trip, only when the wait ran out).
A server that refuses CLIENT UNBLOCK (an ACL without @admin, say) gets the plain BLPOP, with
its timer's lateness.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import redis

from .topology import is_cluster

_READ_AFTER_UNBLOCK = 5.0  # seconds to wait for the BLPOP's reply once CLIENT UNBLOCK answered


class TimelyWait:
    """`wait(keys, seconds)`: pop one element of the first non-empty list among `keys` (all in
    one hash slot), or give up after `seconds`, whichever comes first. -> the popped value or None."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.cluster = is_cluster(client)
        self.unblock_refused = False

    def wait(self, keys: Sequence[str], seconds: float) -> Any:
        seconds = max(seconds, 0.001)  # BLPOP's 0 means "forever"
        node = self.client.get_node_from_key(keys[0]).redis_connection if self.cluster else self.client
        if self.unblock_refused or node is None:
            return self._coarse(node or self.client, keys, seconds)
        pool = node.connection_pool
        conn = pool.get_connection()
        try:
            return self._timely(node, conn, keys, seconds)
        except BaseException:
            conn.disconnect()  # never hand back a connection with a reply still in flight
            raise
        finally:
            pool.release(conn)

    def wait_then(self, keys: Sequence[str], seconds: float, then: tuple[Any, ...]) -> tuple[Any, Any]:
        """`wait`, with the command `then` sent behind the BLPOP in the same write: Redis runs it
        when the BLPOP returns (a client's commands run in order). One plain server only.
        -> (the popped value or None, `then`'s reply, or None when Redis answered it with an
        error - e.g. a script cache it lost: the caller runs the command its usual way)."""
        if self.unblock_refused or self.cluster:
            return self.wait(keys, seconds), None
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            popped = self._timely(self.client, conn, keys, max(seconds, 0.001), then)
            try:
                return popped, conn.read_response()
            except redis.exceptions.ResponseError:
                return popped, None  # read whole: the connection stays clean
        except BaseException:
            conn.disconnect()  # never hand back a connection with a reply still in flight
            raise
        finally:
            pool.release(conn)

    def _coarse(self, client: Any, keys: Sequence[str], seconds: float) -> Any:
        reply = client.blpop(list(keys), timeout=seconds)
        return reply[1] if reply else None

    def _timely(self, node: Any, conn: Any, keys: Sequence[str], seconds: float,
                then: tuple[Any, ...] | None = None) -> Any:
        deadline = time.monotonic() + seconds
        # The id rides with the BLPOP (one round trip); it changes when redis-py reconnects.
        commands = [("CLIENT", "ID"), ("BLPOP", *keys, _seconds(seconds)), *((then,) if then else ())]
        conn.send_packed_command(conn.pack_commands(commands))
        client_id = conn.read_response()
        if not conn.can_read(timeout=max(0.0, deadline - time.monotonic())):
            try:
                node.client_unblock(client_id)  # the BLPOP answers nil now (or already answered)
            except redis.exceptions.ResponseError:
                self.unblock_refused = True  # not allowed here: wait for Redis' own timeout
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                pass  # no second connection now (max_connections reached): Redis' own timeout ends it
            else:
                if not conn.can_read(timeout=_READ_AFTER_UNBLOCK):
                    raise redis.exceptions.TimeoutError("Redis did not end a BLPOP after CLIENT UNBLOCK")
        reply = conn.read_response()
        return reply[1] if reply else None


def _seconds(seconds: float) -> str:
    return f"{seconds:.3f}"
