"""Django database connections in the worker, as Celery's Django fixup handles them.

A worker is a long-running process that Django's request cycle never reaches, so nothing
would ever close a connection that broke or outlived CONN_MAX_AGE. The worker does what
Django does around each request (`close_old_connections`) around each task instead:
- before and after each task: connections that are unusable (errors occurred and the
  backend's check fails), left with autocommit off, or older than CONN_MAX_AGE are closed,
  and with CONN_HEALTH_CHECKS the next query checks its connection first. Persistent
  connections (CONN_MAX_AGE > 0 or None) are kept between tasks otherwise. After each task
  the cache backends are closed too, as after a request.
- at worker start the supervisor closes its own connections (and Django 5.1+ connection
  pools), so pool processes fork without any; and in each pool process, connections
  inherited from the supervisor (opened after the start, e.g. by a worker_ready handler)
  are dropped without talking to the server, since the supervisor still owns them.
Eager calls (`apply()`, a task called from a task) are left alone: closing a connection
there would break the caller's open transaction.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ... import signals

logger = logging.getLogger("celeriac.worker")
_installed = False


def install() -> None:
    """Connect the handlers (once per process, whatever the number of apps)."""
    global _installed
    if _installed:
        return
    _installed = True
    signals.worker_init.connect(close_all_connections)
    signals.worker_process_init.connect(drop_inherited_connections)
    signals.task_prerun.connect(close_old_connections)
    signals.task_postrun.connect(close_old_connections)
    signals.task_postrun.connect(close_caches)


def close_old_connections(sender: Any = None, **_: Any) -> None:
    """Around each task the worker runs: Django's close_old_connections()."""
    request = getattr(sender, "request", None)
    if request is not None and (request.is_eager or request.called_directly):
        return
    from django.db import close_old_connections as close_old
    close_old()


def close_caches(sender: Any = None, **_: Any) -> None:
    """After each task, as after each request: cache backends that hold connections
    (memcached, Redis) let them go; for the others it does nothing."""
    request = getattr(sender, "request", None)
    if request is not None and (request.is_eager or request.called_directly):
        return
    from django.core.cache import close_caches as close_all_caches
    close_all_caches()


def close_all_connections(**_: Any) -> None:
    """The supervisor, before it forks its pool: no connection for the children to inherit."""
    from django.db import connections
    for conn in connections.all(initialized_only=True):
        _close(conn)


def drop_inherited_connections(**_: Any) -> None:
    """In a new pool process: forget the supervisor's connections without closing them on the
    server. The socket is shut on this side only (os.close of its descriptor), so the close()
    that follows sends nothing the supervisor's copy of the connection would see."""
    from django.db import connections
    for conn in connections.all(initialized_only=True):
        raw = conn.connection
        if raw is None:
            continue
        fileno = getattr(raw, "fileno", None)  # psycopg, mysqlclient; SQLite has no socket
        if callable(fileno):
            try:
                os.close(fileno())
            except (OSError, TypeError, ValueError, AttributeError):
                pass
        _close(conn)


def _close(conn: Any) -> None:
    from django.db import Error
    try:
        conn.close()
        # Django 5.1+ connection pools (PostgreSQL): a pool's connections cannot be shared across
        # a fork either, so the pool goes too; the process that needs one next builds its own.
        # Only a pool that exists: asking for `conn.pool` would open a new one.
        if conn.alias in getattr(conn, "_connection_pools", {}) and hasattr(conn, "close_pool"):
            conn.close_pool()
    except Error as exc:  # already broken: it is gone either way
        logger.debug("closing Django connection %r: %s", conn.alias, exc)
