"""Transactional enqueue: `with app.transaction(conn):` writes every message published in the
block through the application's own database connection, inside its transaction, so that
workers see the tasks when the application commits and never if it rolls back.

`conn` may be a psycopg 3 connection, a Django connection or alias (`django.db.connection`,
`"default"`), or a SQLAlchemy `Session` or `Connection`. The block is a transaction block on
that connection, as the library's own would be (`conn.transaction()`, `atomic()`,
`session.begin()`): it commits at its end when it began the transaction, and is a savepoint
inside a transaction that is already open (which the application then commits or rolls
back); an exception rolls the block back.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from ...exceptions import ImproperlyConfigured


class _Executor:
    """`execute(sql, params)` on the application's connection, whatever its library."""

    def __init__(self, run: Callable[[str, Any], Any], binary: bool = False) -> None:
        self._run = run
        self._binary = binary  # psycopg 3 binds %b (binary); other drivers know only %s

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self._run(sql if self._binary else sql.replace("%b", "%s"), params)


@contextlib.contextmanager
def _psycopg(conn: Any) -> Iterator[_Executor]:
    with conn.transaction():
        yield _Executor(lambda sql, params: conn.execute(sql, params), binary=True)


@contextlib.contextmanager
def _django(target: Any) -> Iterator[_Executor]:
    from django.db import connections, transaction

    conn = connections[target] if isinstance(target, str) else target
    if conn.vendor != "postgresql":
        raise ImproperlyConfigured(f"app.transaction() needs a PostgreSQL database; Django's {conn.alias!r} "
                                   f"is {conn.vendor}")

    def run(sql: str, params: Any) -> Any:
        with conn.cursor() as cur:
            cur.execute(sql, params)

    with transaction.atomic(using=conn.alias):
        yield _Executor(run)


@contextlib.contextmanager
def _sqlalchemy(target: Any) -> Iterator[_Executor]:
    block = target.begin_nested() if target.in_transaction() else target.begin()
    with block:
        conn = target.connection() if hasattr(target, "get_bind") else target  # a Session: its connection
        if conn.dialect.name != "postgresql":
            raise ImproperlyConfigured(f"app.transaction() needs a PostgreSQL database; this SQLAlchemy "
                                       f"connection is {conn.dialect.name}")
        yield _Executor(lambda sql, params: conn.exec_driver_sql(sql, tuple(params)))


def _adapter(target: Any) -> Callable[[Any], contextlib.AbstractContextManager[_Executor]]:
    module = type(target).__module__.split(".", 1)[0]
    if module == "psycopg":
        return _psycopg
    if module == "sqlalchemy":
        return _sqlalchemy
    if module == "django" or isinstance(target, str):
        return _django
    raise TypeError(f"app.transaction() takes a psycopg 3 connection, a Django connection or alias, or a "
                    f"SQLAlchemy Session or Connection; not {type(target).__name__}")


@contextlib.contextmanager
def transaction(app: Any, target: Any) -> Iterator[None]:
    from .database import enlisted
    from .broker import PostgresBroker

    broker = app.broker
    if not isinstance(broker, PostgresBroker):
        raise ImproperlyConfigured(
            f"app.transaction() enqueues through the application's PostgreSQL connection, so it needs a "
            f"postgresql:// broker; this app's broker is {broker.safe_url}. Use delay_on_commit() (Django) "
            "or publish after your commit instead")
    broker.db.ensure_schema()  # the tables exist before the application's transaction writes to them
    with _adapter(target)(target) as executor:
        token = enlisted.set((broker.db, executor))
        try:
            yield
        finally:
            enlisted.reset(token)
