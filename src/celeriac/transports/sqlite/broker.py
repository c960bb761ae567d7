"""The embedded broker: one SQLite file in WAL mode, shared by every process on the machine.

Tables: ready/leased messages, delayed messages (moved to their queue when due, inside
the fetch transaction, so the move happens exactly once), worker leases, dead letters.
A fetch is a lease (owner + worker), never delete-on-read: SIGKILL loses nothing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any, Sequence

from .database import SQLiteDatabase, SQLiteEventChannel, SQLiteScheduleStore, sqlite_path_from_url
from ...protocol import priority_of
from ...brokers.base import (Broker, DeadLetter, Delivery, EventChannel, Outgoing, Publisher, ScheduleStore,
                             clamp_priority, oldest_of)

SCHEMA = """
CREATE TABLE IF NOT EXISTS celeriac_messages (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL,
    owner TEXT,
    worker TEXT,
    deliveries INTEGER NOT NULL DEFAULT 0,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS celeriac_messages_ready
    ON celeriac_messages(queue, priority DESC, id) WHERE owner IS NULL;
CREATE INDEX IF NOT EXISTS celeriac_messages_leased
    ON celeriac_messages(worker, owner) WHERE owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS celeriac_delayed (
    id INTEGER PRIMARY KEY,
    eta REAL NOT NULL,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS celeriac_delayed_eta ON celeriac_delayed(eta);
CREATE TABLE IF NOT EXISTS celeriac_workers (
    worker TEXT PRIMARY KEY,
    expires REAL NOT NULL,
    info TEXT
);
CREATE TABLE IF NOT EXISTS celeriac_dead (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL,
    deliveries INTEGER NOT NULL
)
"""


class SQLiteBroker(Broker):
    schemes = ("sqlite",)
    transactional = True

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options)
        self.path = sqlite_path_from_url(url)
        self.db = SQLiteDatabase.for_path(self.path, self.options)
        self.db.register_schema("broker", SCHEMA)

    def _write(self, fn: Any) -> Any:
        return self.db.write(fn)

    def _read(self, fn: Any) -> Any:
        return self.db.read(fn)

    def publish(self, messages: Sequence[Outgoing]) -> None:
        now = time.time()
        ready = [(m.queue, clamp_priority(m.priority), m.payload) for m in messages
                 if m.eta is None or m.eta <= now]
        delayed = [(m.eta, m.queue, clamp_priority(m.priority), m.payload) for m in messages
                   if m.eta is not None and m.eta > now]

        def insert(conn: sqlite3.Connection) -> None:
            if ready:
                conn.executemany(
                    "INSERT INTO celeriac_messages(queue, priority, payload) VALUES (?, ?, ?)", ready)
            if delayed:
                conn.executemany(
                    "INSERT INTO celeriac_delayed(eta, queue, priority, payload) VALUES (?, ?, ?, ?)", delayed)

        self._write(insert)

    def _claim(self, queues: Sequence[str], worker_id: str, owner: str, limit: int) -> list[Delivery]:
        def claim(conn: sqlite3.Connection) -> list[Delivery]:
            now = time.time()
            if conn.execute("SELECT 1 FROM celeriac_delayed WHERE eta <= ? LIMIT 1", (now,)).fetchone():
                conn.execute(
                    "INSERT INTO celeriac_messages(queue, priority, payload) "
                    "SELECT queue, priority, payload FROM celeriac_delayed WHERE eta <= ? ORDER BY eta, id",
                    (now,))
                conn.execute("DELETE FROM celeriac_delayed WHERE eta <= ?", (now,))
            if len(queues) == 1:
                ids = [row[0] for row in conn.execute(
                    "SELECT id FROM celeriac_messages WHERE owner IS NULL AND queue = ? "
                    "ORDER BY priority DESC, id LIMIT ?", (queues[0], limit))]
            else:
                # One ordered index range per queue, merged here: SQLite would sort the
                # whole backlog for `queue IN (...) ORDER BY priority DESC, id`.
                candidates: list[tuple[int, int]] = []
                for queue in queues:
                    candidates.extend(conn.execute(
                        "SELECT -priority, id FROM celeriac_messages WHERE owner IS NULL AND queue = ? "
                        "ORDER BY priority DESC, id LIMIT ?", (queue, limit)))
                candidates.sort()
                ids = [row[1] for row in candidates[:limit]]
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            rows = conn.execute(
                f"UPDATE celeriac_messages SET owner = ?, worker = ?, deliveries = deliveries + 1 "
                f"WHERE id IN ({marks}) RETURNING id, queue, priority, deliveries, payload",
                (owner, worker_id, *ids)).fetchall()
            rows.sort(key=lambda r: (-r[2], r[0]))
            return [Delivery(str(r[0]), r[1], r[4], r[3], r[2], owner) for r in rows]

        found: list[Delivery] = self._write(claim)
        return found

    def _next_due_in(self) -> float | None:
        row = self._read(lambda c: c.execute("SELECT MIN(eta) FROM celeriac_delayed").fetchone())
        return None if row is None or row[0] is None else max(0.0, row[0] - time.time())

    def fetch(self, queues: Sequence[str], worker_id: str, owner: str, limit: int,
              timeout: float, in_flight: int = 0) -> list[Delivery]:
        bell = self.db.doorbell()
        deadline = time.monotonic() + timeout
        while True:
            bell.arm()
            found = self._claim(queues, worker_id, owner, limit)
            if found:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            due_in = self._next_due_in()
            bell.wait(remaining if due_in is None else min(remaining, due_in + 0.0005))

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        ids = [(int(d.tag),) for d in deliveries]
        self._write(lambda c: c.executemany("DELETE FROM celeriac_messages WHERE id = ?", ids))


    def release(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        # Only the current lease: a worker whose lease expired (and whose message went to
        # another worker) must not take the message away from its new owner.
        ids = [(int(d.tag), d.owner) for d in deliveries]
        self._write(lambda c: c.executemany(
            "UPDATE celeriac_messages SET owner = NULL, worker = NULL, "
            "deliveries = MAX(0, deliveries - 1) WHERE id = ? AND owner = ?", ids))

    def requeue_owner(self, owner: str, running_tag: str | None, keep_all_counts: bool = False) -> int:
        running = int(running_tag) if running_tag else -1

        def requeue(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE celeriac_messages SET owner = NULL, worker = NULL, "
                "deliveries = CASE WHEN id = ? OR ? THEN deliveries ELSE MAX(0, deliveries - 1) END "
                "WHERE owner = ?", (running, int(keep_all_counts), owner))
            return cur.rowcount

        return int(self._write(requeue))

    def dead_letter(self, items: Sequence[tuple[Delivery, str]]) -> None:
        if not items:
            return
        now = time.time()

        def move(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO celeriac_dead(queue, payload, reason, at, deliveries) VALUES (?, ?, ?, ?, ?)",
                [(d.queue, d.payload, reason, now, d.deliveries) for d, reason in items])
            conn.executemany("DELETE FROM celeriac_messages WHERE id = ?", [(int(d.tag),) for d, _ in items])

        self._write(move)

    def heartbeat(self, worker_id: str, ttl: float, info: dict[str, Any] | None = None) -> None:
        expires = time.time() + ttl
        text = json.dumps(info or {})
        self._write(lambda c: c.execute(
            "INSERT INTO celeriac_workers(worker, expires, info) VALUES (?, ?, ?) "
            "ON CONFLICT(worker) DO UPDATE SET expires = excluded.expires, info = excluded.info",
            (worker_id, expires, text)))

    def unregister(self, worker_id: str) -> int:
        def drop(conn: sqlite3.Connection) -> int:
            conn.execute("DELETE FROM celeriac_workers WHERE worker = ?", (worker_id,))
            return conn.execute(
                "UPDATE celeriac_messages SET owner = NULL, worker = NULL WHERE worker = ? AND owner IS NOT NULL",
                (worker_id,)).rowcount

        return int(self._write(drop))

    def recover(self) -> int:
        def sweep(conn: sqlite3.Connection) -> int:
            now = time.time()
            conn.execute("DELETE FROM celeriac_workers WHERE expires < ?", (now,))
            return conn.execute(
                "UPDATE celeriac_messages SET owner = NULL, worker = NULL WHERE owner IS NOT NULL "
                "AND worker NOT IN (SELECT worker FROM celeriac_workers)").rowcount

        return int(self._write(sweep))

    def purge(self, queues: Sequence[str]) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            total = 0
            for queue in queues:
                total += conn.execute(
                    "DELETE FROM celeriac_messages WHERE queue = ? AND owner IS NULL", (queue,)).rowcount
                total += conn.execute("DELETE FROM celeriac_delayed WHERE queue = ?", (queue,)).rowcount
            return total

        return int(self._write(delete))

    def queue_sizes(self, queues: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        def count(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
            sizes: dict[str, dict[str, int]] = {}
            for queue, ready, reserved in conn.execute(
                    "SELECT queue, SUM(owner IS NULL), SUM(owner IS NOT NULL) FROM celeriac_messages GROUP BY queue"):
                sizes.setdefault(queue, {"ready": 0, "reserved": 0, "delayed": 0})
                sizes[queue].update(ready=int(ready), reserved=int(reserved))
            for queue, delayed in conn.execute("SELECT queue, COUNT(*) FROM celeriac_delayed GROUP BY queue"):
                sizes.setdefault(queue, {"ready": 0, "reserved": 0, "delayed": 0})["delayed"] = int(delayed)
            return sizes

        sizes: dict[str, dict[str, int]] = self._read(count)
        if queues is not None:
            sizes = {q: sizes.get(q, {"ready": 0, "reserved": 0, "delayed": 0}) for q in queues}
        return sizes

    def oldest_waiting(self, queues: Sequence[str]) -> dict[str, float]:
        # Ids grow with each insert, so each priority's first ready message (the ready index's
        # order) is its oldest; the oldest of those heads is the queue's.
        def heads(conn: sqlite3.Connection) -> dict[str, list[bytes]]:
            found: dict[str, list[bytes]] = {}
            for queue in queues:
                found[queue] = [row[0] for row in conn.execute(
                    "SELECT payload FROM celeriac_messages WHERE id IN (SELECT MIN(id) FROM celeriac_messages "
                    "WHERE queue = ? AND owner IS NULL GROUP BY priority)", (queue,))]
            return found

        return oldest_of(self._read(heads))

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = self._read(lambda c: c.execute(
            "SELECT id, queue, payload, reason, at, deliveries FROM celeriac_dead ORDER BY id DESC LIMIT ?",
            (limit,)).fetchall())
        return [DeadLetter(str(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in rows]

    def requeue_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        def move(conn: sqlite3.Connection) -> int:
            where, params = ("", ()) if ids is None else (
                f" WHERE id IN ({','.join('?' * len(ids))})", tuple(int(i) for i in ids))
            rows = conn.execute(f"SELECT queue, payload FROM celeriac_dead{where} ORDER BY id", params).fetchall()
            conn.executemany("INSERT INTO celeriac_messages(queue, priority, payload) VALUES (?, ?, ?)",
                             [(queue, priority_of(payload), payload) for queue, payload in rows])
            return conn.execute(f"DELETE FROM celeriac_dead{where}", params).rowcount

        return int(self._write(move))

    def transaction(self) -> Any:
        return self.db.transaction()

    def schedule_store(self, name: str, publish: Publisher) -> ScheduleStore | None:
        return SQLiteScheduleStore(self.db, name, publish)

    def event_channel(self) -> EventChannel | None:
        return SQLiteEventChannel(self.db, int(self.options.get("events_max_len", 10000)))

    def housekeeping(self) -> None:
        # Run by worker supervisors (which execute no task) every heartbeat, so the pause of
        # a TRUNCATE checkpoint never lands inside a client's call or a task's round trip.
        self.db.shrink_wal()

    def held_messages(self, worker_id: str) -> list[tuple[str, bytes]] | None:
        rows = self._read(lambda c: c.execute(
            "SELECT owner, payload FROM celeriac_messages WHERE worker = ? AND owner IS NOT NULL",
            (worker_id,)).fetchall())
        return [(str(r[0]), bytes(r[1])) for r in rows]

    def live_workers(self) -> dict[str, dict[str, Any]]:
        rows = self._read(lambda c: c.execute(
            "SELECT worker, info FROM celeriac_workers WHERE expires >= ?", (time.time(),)).fetchall())
        return {r[0]: json.loads(r[1] or "{}") for r in rows}
