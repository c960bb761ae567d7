"""One SQLite file shared by the SQLite broker and result store of a process.

Why this exists:
- SQLite connections must not cross fork() or threads, so each (pid, thread) gets its own.
  Connections inherited over a fork are kept referenced and never closed in the child:
  closing them there could drop the POSIX locks of the child's own connections.
- "database is locked" must never reach a user: writes take the lock with BEGIN IMMEDIATE
  (no lock upgrades, so no deadlock) and we retry with sub-millisecond sleeps ourselves;
  SQLite's own busy handler sleeps in steps of 1-100 ms, which would ruin latency.
- Waiting (for a task, for a result) must not busy-poll: on Linux a waiter watches the
  database's directory with inotify and wakes when the WAL file is written by anyone.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import select
import sqlite3
import struct
import threading
import time
from typing import Any, Callable, Iterator, Sequence, TypeVar

from ...brokers.base import EventChannel, EventSubscription, LeaseState, Publisher, ScheduleStore, Tick
from ...exceptions import ImproperlyConfigured, OperationalError

T = TypeVar("T")

_LOCK_TIMEOUT = 120.0  # seconds a writer keeps trying before it reports a stuck lock


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


_warned_no_inotify = False


def _warn_no_inotify(err: int) -> None:
    global _warned_no_inotify
    if not _warned_no_inotify:
        _warned_no_inotify = True
        logging.getLogger("celeriac").warning(
            "inotify is not available (%s): waiting on SQLite falls back to polling (up to 50 ms late). "
            "If the limit is reached, raise fs.inotify.max_user_instances", os.strerror(err))


class Doorbell:
    """Blocks until the database file may have changed, or the timeout passes."""

    _IN_MODIFY = 0x00000002
    _IN_NONBLOCK = 0o4000
    _IN_CLOEXEC = 0o2000000
    _EVENT = struct.Struct("iIII")
    _libc: Any = None

    def __init__(self, path: str, version: Callable[[], int] | None = None) -> None:
        # `version` reads PRAGMA data_version on the waiting thread's connection: it changes
        # when another connection's commit becomes visible to this one.
        self._version = version
        self._armed_version: int | None = None
        self._names = {os.path.basename(path).encode(), (os.path.basename(path) + "-wal").encode(),
                       (os.path.basename(path) + "-journal").encode()}
        self._fd: int | None = None
        self._poll: Any = None
        try:
            libc = Doorbell._load_libc()
            fd = libc.inotify_init1(self._IN_NONBLOCK | self._IN_CLOEXEC)
            if fd < 0:
                _warn_no_inotify(ctypes.get_errno())
            if fd >= 0:
                if libc.inotify_add_watch(fd, os.path.dirname(path).encode(), self._IN_MODIFY) >= 0:
                    self._fd = fd
                    self._poll = select.poll()
                    self._poll.register(fd, select.POLLIN)
                else:
                    os.close(fd)
        except (OSError, AttributeError):
            self._fd = None  # not Linux, or out of inotify instances: fall back to polling
        self._sleep = 0.001

    @classmethod
    def _load_libc(cls) -> Any:
        if cls._libc is None:
            cls._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return cls._libc

    @property
    def event_driven(self) -> bool:
        return self._fd is not None

    def fileno(self) -> int | None:
        """The inotify descriptor (None: no inotify, poll instead), for an asyncio loop's add_reader."""
        return self._fd

    def drain(self) -> bool:
        """Read what inotify reported without blocking: True when this database's files were written."""
        return self._fd is not None and self._drain()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def arm(self) -> None:
        """Forget past events; call before checking the condition you will wait for."""
        if self._fd is not None:
            self._drain()
            if self._version is not None:
                self._armed_version = self._version()
            return
        # Polling (no inotify): back off while nothing changes, start over after a change.
        version = self._version() if self._version is not None else None
        if version is None or version != self._armed_version:
            self._sleep = 0.001
            self._armed_version = version

    def _drain(self) -> bool:
        assert self._fd is not None
        relevant = False
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return relevant
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            offset = 0
            size = self._EVENT.size
            while offset + size <= len(data):
                _wd, mask, _cookie, length = self._EVENT.unpack_from(data, offset)
                name = data[offset + size: offset + size + length].rstrip(b"\0")
                offset += size + length
                if name in self._names or mask & 0x4000:  # IN_Q_OVERFLOW: assume relevant
                    relevant = True

    def wait(self, timeout: float) -> None:
        if timeout <= 0:
            return
        if self._fd is None:
            time.sleep(min(timeout, self._sleep))
            self._sleep = min(self._sleep * 2, 0.05)
            return
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._poll.poll(max(1, int(remaining * 1000 + 0.999))) and self._drain():
                self._until_visible(deadline)
                return

    def _until_visible(self, deadline: float) -> None:
        """SQLite appends a commit's WAL frames (the inotify event) before it publishes the
        commit in the shared-memory index (no event): wait, briefly, until this connection
        can see a new commit, so the caller re-checks once and at the right moment."""
        if self._version is None or self._armed_version is None:
            return
        settle_until = min(deadline, time.monotonic() + 0.05)
        while self._version() == self._armed_version and time.monotonic() < settle_until:
            time.sleep(0.0005)


class SQLiteDatabase:
    """Connections, transactions and the doorbell for one database file."""

    _instances: dict[str, "SQLiteDatabase"] = {}
    _instances_lock = threading.Lock()

    @classmethod
    def for_path(cls, path: str, options: dict[str, Any] | None = None) -> "SQLiteDatabase":
        path = os.path.abspath(path)
        with cls._instances_lock:
            db = cls._instances.get(path)
            if db is None:
                db = cls._instances[path] = cls(path, options or {})
            return db

    def __init__(self, path: str, options: dict[str, Any]) -> None:
        self.path = path
        self.synchronous = str(options.get("synchronous", "NORMAL")).upper()
        self._conns: dict[tuple[int, int], sqlite3.Connection] = {}
        self._bells: dict[tuple[int, int], Doorbell] = {}
        self._schemas: set[str] = set()
        self._schema_sql: dict[str, str] = {}
        self._depth: dict[tuple[int, int], int] = {}
        self._schema_pid = os.getpid()

    def _key(self) -> tuple[int, int]:
        return os.getpid(), threading.get_ident()

    def close(self) -> None:
        """Close this process's connections and doorbells to the file (each holds a descriptor,
        a doorbell an inotify instance: a process that opens many files must give them back)."""
        pid = os.getpid()
        for key in [k for k in self._conns if k[0] == pid]:
            self._conns.pop(key).close()
        for key in [k for k in self._bells if k[0] == pid]:
            self._bells.pop(key).close()

    @classmethod
    def close_under(cls, directory: str) -> None:
        """Close and forget every database in `directory` (tests: one directory per test)."""
        prefix = os.path.abspath(directory) + os.sep
        with cls._instances_lock:
            gone = [cls._instances.pop(p) for p in list(cls._instances) if p.startswith(prefix)]
        for db in gone:
            db.close()

    def conn(self) -> sqlite3.Connection:
        key = self._key()
        conn = self._conns.get(key)
        if conn is None:
            conn = self._connect()
            self._conns[key] = conn
        return conn

    def _connect(self) -> sqlite3.Connection:
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise OperationalError(f"cannot open SQLite database {self.path}: directory {directory} does not exist")
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0)
            conn.execute("PRAGMA busy_timeout=0")
            self._retry(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone())
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
        except sqlite3.Error as exc:
            raise OperationalError(f"cannot open SQLite database {self.path}: {exc}") from exc
        return conn

    def doorbell(self) -> Doorbell:
        key = self._key()
        bell = self._bells.get(key)
        if bell is None:
            bell = self._bells[key] = Doorbell(self.path, self._data_version)
        return bell

    def _data_version(self) -> int:
        return int(self.read(lambda c: c.execute("PRAGMA data_version").fetchone()[0]))

    def register_schema(self, name: str, statements: str) -> None:
        """Tables a user of this file needs; created before the first transaction touches it.

        Never inside a caller's transaction: a rollback would undo the tables while this
        object believed them created.
        """
        self._schema_sql[name] = statements
        if not self._depth.get(self._key()):
            self._ensure_schemas()

    def _ensure_schemas(self) -> None:
        if os.getpid() != self._schema_pid:
            self._schemas = set()
            self._schema_pid = os.getpid()
        pending = [(n, sql) for n, sql in self._schema_sql.items() if n not in self._schemas]
        if not pending or self._depth.get(self._key()):
            return
        conn = self.conn()
        self._retry(lambda: conn.execute("BEGIN IMMEDIATE"))
        try:
            for _name, statements in pending:
                for statement in statements.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            self._retry(lambda: conn.execute("COMMIT"))
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._schemas.update(n for n, _ in pending)

    def _retry(self, fn: Callable[[], T]) -> T:
        delay = 0.0001
        deadline: float | None = None
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise OperationalError(f"SQLite error on {self.path}: {exc}") from exc
                now = time.monotonic()
                if deadline is None:
                    deadline = now + _LOCK_TIMEOUT
                elif now > deadline:
                    raise OperationalError(
                        f"the SQLite database {self.path} stayed locked for {_LOCK_TIMEOUT:.0f}s; "
                        "another process holds a write transaction open - stop it or use Redis") from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.005)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction around several writes (e.g. a batch's results and acks)."""
        key = self._key()
        if self._depth.get(key):
            self._depth[key] += 1
            try:
                yield
            finally:
                self._depth[key] -= 1
            return
        self._ensure_schemas()
        conn = self.conn()
        self._retry(lambda: conn.execute("BEGIN IMMEDIATE"))
        self._depth[key] = 1
        try:
            yield
            self._retry(lambda: conn.execute("COMMIT"))
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise OperationalError(f"SQLite error on {self.path}: {exc}") from exc
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            self._depth[key] = 0

    def try_write(self, fn: Callable[[], T]) -> tuple[bool, T | None]:
        """One write transaction around `fn` (whose writes join it), only if the lock is free
        now: (False, None) while another connection holds it. For the asyncio client, which
        waits for the lock on its event loop, never in a sleep here."""
        self._ensure_schemas()
        conn, key = self.conn(), self._key()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                return False, None
            raise OperationalError(f"SQLite error on {self.path}: {exc}") from exc
        self._depth[key] = 1
        try:
            result = fn()
            self._retry(lambda: conn.execute("COMMIT"))
            return True, result
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise OperationalError(f"SQLite error on {self.path}: {exc}") from exc
            raise
        finally:
            self._depth[key] = 0

    def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one write transaction (or inside the caller's), waiting out other writers."""
        with self.transaction():
            try:
                return fn(self.conn())
            except sqlite3.Error as exc:
                raise OperationalError(f"SQLite error on {self.path}: {exc}") from exc

    def shrink_wal(self, limit: int = 32 * 1024 * 1024, wait_ms: int = 50) -> bool:
        """Reset a WAL that outgrew `limit` bytes; True when it was truncated.

        With readers always overlapping (clients waiting, workers claiming), SQLite's passive
        auto-checkpoint never finds the moment to restart the WAL, and it grows without
        bound. A TRUNCATE checkpoint waits (briefly) for readers to move to the latest
        snapshot, copies every frame back and empties the file.
        """
        try:
            size = os.path.getsize(self.path + "-wal")
        except OSError:
            return False
        if size <= limit:
            return False
        conn = self.conn()
        try:
            conn.execute(f"PRAGMA busy_timeout={int(wait_ms)}")
            busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            return not busy
        except sqlite3.Error:
            return False
        finally:
            conn.execute("PRAGMA busy_timeout=0")

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._ensure_schemas()
        conn = self.conn()
        try:
            return self._retry(lambda: fn(conn))
        except sqlite3.Error as exc:
            raise OperationalError(f"SQLite error on {self.path}: {exc}") from exc


def sqlite_path_from_url(url: str) -> str:
    """`sqlite:///rel.db` is relative to the current directory, `sqlite:////abs.db` absolute."""
    rest = url.split("://", 1)[1] if "://" in url else url
    if rest.startswith("/"):
        rest = rest[1:]
    rest = rest.split("?", 1)[0]
    if not rest:
        raise ImproperlyConfigured(f"the SQLite URL {url!r} has no file name: use sqlite:///celeriac.db "
                                   "(relative to the current directory) or sqlite:////abs/path.db")
    return os.path.abspath(rest)


_SCHEDULE_SCHEMA = """
CREATE TABLE IF NOT EXISTS celeriac_beat_leases (
    name TEXT PRIMARY KEY,
    holder TEXT,
    token INTEGER NOT NULL,
    expires REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS celeriac_beat_ticks (
    name TEXT NOT NULL,
    entry TEXT NOT NULL,
    last REAL NOT NULL,
    PRIMARY KEY (name, entry)
) WITHOUT ROWID
"""


class SQLiteScheduleStore(ScheduleStore):
    """Beat's lease and ticks in the SQLite file. `fire` checks the lease, records the ticks
    and publishes in one write transaction: when the broker is this file, a tick is sent and
    recorded together or not at all; with another broker (RabbitMQ) the publish happens
    before the commit, so a crash in between can send a tick twice but never loses one."""

    def __init__(self, db: SQLiteDatabase, name: str, publish: Publisher) -> None:
        self.db, self.name, self.publish = db, name, publish
        db.register_schema("beat", _SCHEDULE_SCHEMA)

    def lease(self, holder: str, ttl: float) -> int | None:
        def take(c: sqlite3.Connection) -> int | None:
            now = time.time()
            row = c.execute("SELECT holder, token, expires FROM celeriac_beat_leases WHERE name = ?",
                            (self.name,)).fetchone()
            if row is not None and row[0] == holder and row[2] > now:
                c.execute("UPDATE celeriac_beat_leases SET expires = ? WHERE name = ?", (now + ttl, self.name))
                return int(row[1])
            if row is not None and row[0] is not None and row[2] > now:
                return None
            token = (int(row[1]) if row else 0) + 1
            c.execute("INSERT INTO celeriac_beat_leases(name, holder, token, expires) VALUES (?, ?, ?, ?) "
                      "ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, token = excluded.token, "
                      "expires = excluded.expires", (self.name, holder, token, now + ttl))
            return token

        return self.db.write(take)

    def release(self, holder: str) -> None:
        self.db.write(lambda c: c.execute(
            "UPDATE celeriac_beat_leases SET holder = NULL, expires = 0 WHERE name = ? AND holder = ?",
            (self.name, holder)))

    def lease_state(self) -> LeaseState:
        row = self.db.read(lambda c: c.execute(
            "SELECT holder, token, expires FROM celeriac_beat_leases WHERE name = ?", (self.name,)).fetchone())
        if row is None:
            return LeaseState(None, 0, 0.0)
        expires_in = float(row[2]) - time.time()
        return LeaseState(row[0] if expires_in > 0 else None, int(row[1]), expires_in)

    def last_ticks(self) -> dict[str, float]:
        return dict(self.db.read(lambda c: c.execute(
            "SELECT entry, last FROM celeriac_beat_ticks WHERE name = ?", (self.name,)).fetchall()))

    def fire(self, holder: str, token: int, ticks: Sequence[Tick]) -> list[str] | None:
        def run(c: sqlite3.Connection) -> list[str] | None:
            row = c.execute("SELECT holder, token, expires FROM celeriac_beat_leases WHERE name = ?",
                            (self.name,)).fetchone()
            if row is None or row[0] != holder or int(row[1]) != token or row[2] <= time.time():
                return None
            fired, messages = [], []
            for tick in ticks:
                last = c.execute("SELECT last FROM celeriac_beat_ticks WHERE name = ? AND entry = ?",
                                 (self.name, tick.entry)).fetchone()
                if last is not None and last[0] >= tick.at:
                    continue
                c.execute("INSERT INTO celeriac_beat_ticks(name, entry, last) VALUES (?, ?, ?) "
                          "ON CONFLICT(name, entry) DO UPDATE SET last = excluded.last",
                          (self.name, tick.entry, tick.at))
                fired.append(tick.entry)
                if tick.message is not None:
                    messages.append(tick.message)
            if messages:
                self.publish(messages)  # joins this transaction when the broker is this file
            return fired

        return self.db.write(run)


_EVENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS celeriac_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    body BLOB NOT NULL
)
"""


class SQLiteEventChannel(EventChannel):
    """Events in a table of the SQLite file: one insert transaction per batch, which also
    deletes the rows older than the newest `max_len` (a range delete on the primary key)."""

    def __init__(self, db: SQLiteDatabase, max_len: int) -> None:
        self.db, self.max_len = db, max(100, int(max_len))
        db.register_schema("events", _EVENTS_SCHEMA)

    def send(self, events: Sequence[bytes]) -> None:
        if not events:
            return

        def put(c: sqlite3.Connection) -> None:
            c.executemany("INSERT INTO celeriac_events(body) VALUES (?)", [(e,) for e in events])
            c.execute("DELETE FROM celeriac_events WHERE seq <= ?", (c.execute("SELECT last_insert_rowid()")
                                                                      .fetchone()[0] - self.max_len,))

        self.db.write(put)

    def subscribe(self) -> EventSubscription:
        return _SQLiteEventSubscription(self.db)


class _SQLiteEventSubscription(EventSubscription):
    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db
        # The last number handed out (rows may all have been pruned since): what comes next is new.
        self.cursor = int(db.read(lambda c: c.execute(
            "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'celeriac_events'), 0)").fetchone()[0]))
        self.missed = 0

    def next_batch(self, timeout: float) -> list[bytes]:
        bell = self.db.doorbell()
        deadline = time.monotonic() + timeout
        while True:
            bell.arm()
            rows = self.db.read(lambda c: c.execute(
                "SELECT seq, body FROM celeriac_events WHERE seq > ? ORDER BY seq LIMIT 2000",
                (self.cursor,)).fetchall())
            if rows:
                first = int(rows[0][0])
                if first > self.cursor + 1:
                    self.missed += first - self.cursor - 1  # pruned before we read them
                self.cursor = int(rows[-1][0])
                return [bytes(body) for _seq, body in rows]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            bell.wait(min(remaining, 1.0))
