"""One PostgreSQL database shared by the PostgreSQL broker and result store of a process.

Why this exists:
- psycopg connections must not cross fork() or be shared by threads doing separate
  transactions, so each (pid, thread) gets its own autocommit connection. Connections
  inherited over a fork are kept referenced and never closed in the child: closing them
  would send the server a Terminate on the parent's socket.
- A worker writes a batch's results and acks in one transaction (one fsync for many
  tasks): the broker and the result store on the same URL share this object, so their
  writes join the same transaction on the thread's connection.
- Waiting (for a message, a result, an event) never busy-polls: one listener connection
  per process LISTENs on the channels it waits on (wakeups.py).
- The tables live in one schema, created on first use and migrated by version.
"""

from __future__ import annotations


import contextlib
import contextvars
import logging
import os
import re
import select
import threading
import time
from typing import Any, Callable, Iterator, Sequence, TypeVar
from urllib.parse import parse_qsl, urlsplit

from ...exceptions import ImproperlyConfigured, OperationalError
from .readahead import ReadAhead

try:
    import psycopg
    from psycopg import errors as pg_errors
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImproperlyConfigured(
        "PostgreSQL URLs need psycopg 3: pip install 'celeriac[postgres]'") from exc

from .wakeups import Wakeups  # noqa: E402  (after the check above: it imports psycopg)

T = TypeVar("T")

logger = logging.getLogger("celeriac.postgres")
_VACUUM_LOCK = 0x76616375  # the advisory lock of a worker vacuuming the hot tables ("vacu")
IDLE_CHECK = 0.5  # seconds: a connection idle longer is checked before use (see _still_usable)
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
# (database, connection) of a transactional enqueue (app.transaction): that database's
# writes in this context go through the application's connection, in its transaction.
enlisted: contextvars.ContextVar[tuple["PostgresDatabase", Any] | None] = contextvars.ContextVar(
    "celeriac_pg_enlisted", default=None)


def describe(url: str) -> str:
    """host:port/database of a URL, for errors (never user or password)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    host = parts.hostname or query.get("host") or "localhost"
    port = parts.port or int(query.get("port") or 5432)
    database = parts.path.lstrip("/") or query.get("dbname") or (parts.username or "")
    return f"PostgreSQL at {host}:{port}/{database}"


def schema_name(options: dict[str, Any]) -> str:
    name = str(options.get("postgres_schema") or "celeriac")
    if not _IDENTIFIER.match(name):
        raise ImproperlyConfigured(f"postgres_schema {name!r} is not a plain lower-case SQL name "
                                   "(letters, digits, underscores; e.g. 'celeriac')")
    return name


Migration = Callable[[str], str]  # schema name -> the SQL that moves the schema one version up


class PostgresDatabase:
    """Connections, transactions, schema and wake-ups for one (database URL, schema)."""

    _instances: dict[tuple[str, str], "PostgresDatabase"] = {}
    _instances_lock = threading.Lock()

    @classmethod
    def for_url(cls, url: str, options: dict[str, Any] | None = None) -> "PostgresDatabase":
        schema = schema_name(options or {})
        conninfo = "postgresql://" + url.split("://", 1)[1] if "://" in url else url
        with cls._instances_lock:
            db = cls._instances.get((conninfo, schema))
            if db is None:
                db = cls._instances[(conninfo, schema)] = cls(conninfo, schema)
            return db

    def __init__(self, conninfo: str, schema: str) -> None:
        self.conninfo = conninfo
        self.schema = schema
        self.where = describe(conninfo)
        self._conns: dict[tuple[int, int], psycopg.Connection[Any]] = {}
        self._fast: dict[tuple[int, int], psycopg.Connection[Any]] = {}  # synchronous_commit off
        self._depth: dict[tuple[int, int], int] = {}
        self._last_use: dict[tuple[int, int], float] = {}  # monotonic; fast connections under (-pid, thread)
        # statements (sql, parameters) waiting for the commit: sent together in one pipeline
        # (and, for a statement whose rows are wanted after the commit, the list they go to)
        self._pending: dict[tuple[int, int], list[tuple[str, Any, list[Any] | None]]] = {}
        self._migrated = False  # the tables are at this code's version (a forked child inherits it)
        self._schema_lock = threading.Lock()
        self._wakeups: dict[int, Wakeups] = {}
        self._read_ahead: dict[int, ReadAhead] = {}
        self._vacuum_thread: threading.Thread | None = None
        self._vacuum_warned = False

    def channel(self, kind: str) -> str:
        return f"{self.schema}_{kind}"

    # --- connections ---

    def connect(self, autocommit: bool = True) -> "psycopg.Connection[Any]":
        try:
            return psycopg.connect(self.conninfo, autocommit=autocommit, connect_timeout=10)
        except psycopg.Error as exc:
            raise OperationalError(f"cannot connect to {self.where}: {_first_line(exc)}") from exc

    def conn(self) -> "psycopg.Connection[Any]":
        key = (os.getpid(), threading.get_ident())
        conn = self._conns.get(key)
        if conn is None or not self._still_usable(key, conn):
            if conn is not None:
                self._drop()
            conn = self._conns[key] = self.connect()
        return conn

    def _still_usable(self, key: tuple[int, int], conn: "psycopg.Connection[Any]") -> bool:
        """_usable(), asked only of a connection idle for a while: the server closes idle
        connections (a restart, a timeout), not busy ones, and the check costs a system call
        per statement (a tenth of a result read's CPU). A busy connection that failed anyway
        fails its statement, which its caller retries as after any lost connection."""
        now = time.monotonic()
        last, self._last_use[key] = self._last_use.get(key, 0.0), now
        return now - last < IDLE_CHECK or _usable(conn)

    def _drop(self) -> None:
        """The thread's connection failed: forget it (the next call connects again)."""
        conn = self._conns.pop((os.getpid(), threading.get_ident()), None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def error(self, exc: BaseException) -> OperationalError:
        return OperationalError(f"{self.where}: {_first_line(exc)}")

    # --- schema ---

    def ensure_schema(self) -> None:
        if self._migrated:
            return
        with self._schema_lock:
            if not self._migrated:
                from .schema import migrate
                conn = self.connect()
                try:
                    migrate(conn, self.schema, self.where)
                except psycopg.Error as exc:
                    raise self.error(exc) from exc
                finally:
                    conn.close()
                self._migrated = True

    # --- transactions ---

    @contextlib.contextmanager
    def transaction(self, durable: bool = True) -> Iterator["psycopg.Connection[Any]"]:
        """One transaction around several writes (a batch's results and acks); nested calls
        join it. Inside `app.transaction(conn)` the application's connection is used.

        Writes through `run` are not sent one by one: they wait, and go out with BEGIN and
        COMMIT in one pipeline (psycopg's pipeline mode: one round trip) - a worker's batch of
        results, follow-up messages and acks costs one round trip, with its parameters bound
        in binary by the server and the statements prepared once per connection (binding
        them into one query string on this side cost more CPU than running the tasks, and the
        server parsed and planned each string anew). A write that reads rows (or a
        `write`/`read` callback) sends what waits first, so the order of the statements is kept.
        `durable` False commits without waiting for the WAL flush: for writes that a crash
        may undo harmlessly (a claim lost with the server only makes the message claimable
        again)."""
        outer = self.enlisted()
        if outer is not None:
            yield outer
            return
        key = (os.getpid(), threading.get_ident())
        if self._depth.get(key):
            self._depth[key] += 1
            try:
                yield self._conns[key]
            finally:
                self._depth[key] -= 1
            return
        self.ensure_schema()
        conn = self.conn()
        self._depth[key] = 1
        begin: list[tuple[str, Any, list[Any] | None]] = [("BEGIN", None, None)]
        if not durable:
            begin.append(("SET LOCAL synchronous_commit = off", None, None))
        self._pending[key] = begin
        try:
            yield conn
            self._send(key, conn, "COMMIT")
        except BaseException as exc:
            self._pending[key] = []
            if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, psycopg.Error):
                if isinstance(exc, psycopg.OperationalError) or conn.broken:
                    self._drop()
                raise self.error(exc) from exc
            raise
        finally:
            self._depth[key] = 0

    def _send(self, key: tuple[int, int], conn: "psycopg.Connection[Any]", last: str | None = None) -> None:
        """Send the statements waiting in this transaction (and `last`) in one pipeline: one
        round trip. An error in one raises when the pipeline ends (the rest were skipped)."""
        waiting = self._pending.get(key) or []
        if last is not None:
            waiting.append((last, None, None))
        self._pending[key] = []
        if len(waiting) == 1 and waiting[0][2] is None:
            conn.execute(waiting[0][0], waiting[0][1])
        elif waiting:
            wanted: list[tuple[Any, list[Any]]] = []
            with conn.pipeline():
                for sql, params, sink in waiting:
                    cur = conn.execute(sql, params)
                    if sink is not None:
                        wanted.append((cur, sink))
            for cur, sink in wanted:  # the pipeline has ended: every result is in
                sink.extend(cur.fetchall())

    def rows_at_commit(self, sql: str, params: Any = ()) -> list[Any]:
        """A statement sent with this transaction's other writes, in the same pipeline (no
        round trip of its own); the returned list receives its rows when they are sent - at
        the latest with the COMMIT, so read it after the transaction. Only inside a
        transaction of this database's own (not an application's)."""
        key = (os.getpid(), threading.get_ident())
        if not self._depth.get(key) or self.enlisted() is not None:
            raise RuntimeError("rows_at_commit() needs a transaction of the PostgreSQL broker's own")
        rows: list[Any] = []
        self._pending[key].append((sql, params, rows))
        return rows

    def _joined(self) -> "psycopg.Connection[Any]":
        """The connection of this thread's open transaction, with what waited sent."""
        key = (os.getpid(), threading.get_ident())
        conn = self._conns[key]
        self._send(key, conn)
        return conn

    def write(self, fn: Callable[[Any], T], retry_conflicts: bool = True, durable: bool = True) -> T:
        """`fn` in one transaction (or inside the caller's). A deadlock or serialization
        failure of a transaction of its own is retried; a lost connection is reported."""
        attempts = 0
        while True:
            try:
                with self.transaction(durable) as conn:
                    if self.enlisted() is None:
                        conn = self._joined()
                    return fn(conn)
            except OperationalError as exc:
                cause = exc.__cause__
                conflict = isinstance(cause, (pg_errors.DeadlockDetected, pg_errors.SerializationFailure))
                if not (conflict and retry_conflicts and attempts < 5 and not self.in_transaction()):
                    raise
                attempts += 1
                time.sleep(0.001 * attempts)

    def run(self, sql: str, params: Any = (), fetch: bool = False, durable: bool = True) -> list[Any]:
        """One statement: inside the caller's transaction if there is one, else on its own in
        autocommit (one round trip; `durable` False: on the thread's connection that commits
        without waiting for the WAL flush). Returns its rows when `fetch`."""
        outer = self.enlisted()
        if outer is not None:
            cur = outer.execute(sql, params)
            return list(cur.fetchall()) if fetch and cur is not None else []
        key = (os.getpid(), threading.get_ident())
        if self._depth.get(key):
            conn = self._conns[key]
            if not fetch:  # waits for the others of this transaction (see transaction())
                self._pending[key].append((sql, params, None))
                return []
            self._send(key, conn)
        else:
            self.ensure_schema()
            conn = self.conn() if durable else self.fast_conn()
        try:
            cur = conn.execute(sql, params)
            return list(cur.fetchall()) if fetch else []
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError) or conn.broken:
                self._drop()
                self._drop_fast()
            raise self.error(exc) from exc

    def fast_conn(self) -> "psycopg.Connection[Any]":
        key = (os.getpid(), threading.get_ident())
        conn = self._fast.get(key)
        if conn is not None and not self._still_usable((-key[0], key[1]), conn):
            self._drop_fast()
            conn = None
        if conn is None:
            try:
                conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10,
                                       options="-c synchronous_commit=off")
            except psycopg.Error as exc:
                raise OperationalError(f"cannot connect to {self.where}: {_first_line(exc)}") from exc
            self._fast[key] = conn
        return conn

    def _drop_fast(self) -> None:
        conn = self._fast.pop((os.getpid(), threading.get_ident()), None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def read(self, fn: Callable[[Any], T]) -> T:
        """A read in autocommit; retried once on a new connection when the old one was lost
        (after a server restart every idle connection is)."""
        if self.in_transaction():
            with self.transaction() as conn:
                return fn(conn if self.enlisted() is not None else self._joined())
        self.ensure_schema()
        for attempt in (1, 2):
            conn = self.conn()
            try:
                return fn(conn)
            except psycopg.OperationalError as exc:
                self._drop()
                if attempt == 2:
                    raise self.error(exc) from exc
            except psycopg.Error as exc:
                raise self.error(exc) from exc
        raise AssertionError("unreachable")

    def enlisted(self) -> Any:
        """The application's connection this context writes through (app.transaction), or None."""
        found = enlisted.get()
        return found[1] if found is not None and found[0] is self else None

    def in_transaction(self) -> bool:
        return self.enlisted() is not None or bool(self._depth.get((os.getpid(), threading.get_ident())))

    def notify(self, conn: "psycopg.Connection[Any]", kind: str, payloads: Sequence[str]) -> None:
        """NOTIFY the channel once per payload (sent when the transaction commits)."""
        if payloads:
            conn.execute("SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p",
                         (self.channel(kind), list(payloads)))

    def vacuum_soon(self, tables: Sequence[str]) -> None:
        """VACUUM these tables in a thread of its own (the caller, a worker's supervisor, keeps
        its heartbeat), unless a vacuum of ours is still running or another worker's is (an
        advisory lock): a lean table costs milliseconds to vacuum."""
        running = self._vacuum_thread
        if running is not None and running.is_alive():
            return
        self._vacuum_thread = threading.Thread(target=self._vacuum, args=(list(tables),),
                                               name="celeriac-pg-vacuum", daemon=True)
        self._vacuum_thread.start()

    def _vacuum(self, tables: list[str]) -> None:
        try:
            self.ensure_schema()
            with self.connect() as conn:
                locked = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                                      (_VACUUM_LOCK, self.schema)).fetchone()
                if locked and locked[0]:
                    conn.execute(f"VACUUM (SKIP_LOCKED) {', '.join(tables)}")
        except (psycopg.Error, OperationalError) as exc:  # not the owner, server away: autovacuum remains
            if not self._vacuum_warned:
                self._vacuum_warned = True
                logger.warning("could not vacuum %s on %s (%s); autovacuum will, less often",
                               ", ".join(tables), self.where, _first_line(exc))

    def wakeups(self) -> "Wakeups":
        pid = os.getpid()
        found = self._wakeups.get(pid)
        if found is None:
            with self._schema_lock:
                found = self._wakeups.get(pid)
                if found is None:
                    found = self._wakeups[pid] = Wakeups(self)
        return found

    def read_ahead(self) -> "ReadAhead":
        """This process's sent ids and results read ahead (readahead.py): per process, as a
        forked child reads no results its parent sent."""
        pid = os.getpid()
        found = self._read_ahead.get(pid)
        if found is None:
            found = self._read_ahead.setdefault(pid, ReadAhead())
        return found

    def close_thread(self) -> None:
        if not self.in_transaction():
            self._drop()
            self._drop_fast()


def _usable(conn: "psycopg.Connection[Any]") -> bool:
    """False for an idle connection the server has closed (a restart, a failover, an idle
    timeout): it says so on the socket before we send anything, so the caller connects again
    instead of failing its next statement - which was never run, but could not tell."""
    if conn.closed or conn.broken:
        return False
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return False
    # An idle connection that does not LISTEN hears nothing but its own end (the server's
    # "terminating connection" and EOF); the rare harmless message costs one reconnection.
    return not readable and conn.pgconn.status == psycopg.pq.ConnStatus.OK


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
