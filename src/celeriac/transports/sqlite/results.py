"""Results in the embedded SQLite file (by default the same file as the broker)."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any, Sequence

from ... import states
from .database import SQLiteDatabase, SQLiteEventChannel, SQLiteScheduleStore, sqlite_path_from_url
from ...brokers.base import EventChannel, Publisher, ScheduleStore
from ...history import HistoryBuffer, HistoryQuery, TaskRecord
from . import history as sqlite_history
from ...backends.base import ChordPart, ResultStore, StoredResult, as_id_list

SCHEMA = """
CREATE TABLE IF NOT EXISTS celeriac_results (
    task_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    meta BLOB NOT NULL,
    expires REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS celeriac_results_expires ON celeriac_results(expires) WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS celeriac_chord_parts (
    group_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    meta BLOB NOT NULL,
    PRIMARY KEY (group_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS celeriac_worker_beats (
    worker_id TEXT PRIMARY KEY,
    info TEXT NOT NULL,
    expires REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS celeriac_control (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    command TEXT NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS celeriac_replies (
    reply_id TEXT NOT NULL,
    reply TEXT NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS celeriac_replies_id ON celeriac_replies(reply_id);
CREATE TABLE IF NOT EXISTS celeriac_rate (
    key TEXT PRIMARY KEY,
    next_free REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS celeriac_unique (
    key TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    held_until REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS celeriac_revoked (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    signal TEXT,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS celeriac_chords (
    group_id TEXT PRIMARY KEY,
    done INTEGER NOT NULL,
    fired_by TEXT,
    expires REAL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS celeriac_chord_sizes (
    group_id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    added INTEGER NOT NULL
) WITHOUT ROWID
"""

_READY = tuple(states.READY_STATES)
_READY_SQL = ",".join(f"'{s}'" for s in _READY)


class SQLiteResultStore(ResultStore):
    schemes = ("sqlite",)

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.path = sqlite_path_from_url(url)
        self.db = SQLiteDatabase.for_path(self.path, self.options)
        self.db.register_schema("results", SCHEMA)
        # The history lives in a file of its own beside this one: writing it never holds the
        # write lock that the broker's fetches and acks (in the main file) wait for.
        self.history_db = SQLiteDatabase.for_path(sqlite_history.path_beside(self.path), self.options)
        self.history_db.register_schema("history", sqlite_history.SCHEMA)
        self.history_buffer = HistoryBuffer(self._write_history)

    def store(self, results: Sequence[StoredResult]) -> None:
        if not results:
            return
        now = time.time()
        rows = [(r.task_id, r.status, r.data, None if r.expires_in is None else now + r.expires_in)
                for r in results]
        # A final state is never replaced by an in-flight one (a late STARTED after SUCCESS).
        self.db.write(lambda c: c.executemany(
            "INSERT INTO celeriac_results(task_id, status, meta, expires) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(task_id) DO UPDATE SET status = excluded.status, meta = excluded.meta, "
            f"expires = excluded.expires WHERE excluded.status IN ({_READY_SQL}) "
            f"OR celeriac_results.status NOT IN ({_READY_SQL})", rows))
        history = [r.history for r in results if r.history is not None]
        if history:  # written in batches of many tasks (celeriac.history.HistoryBuffer)
            self.history_buffer.add(history)

    def _write_history(self, records: list[TaskRecord]) -> None:
        self.history_db.write(lambda c: sqlite_history.write(c, records))

    def _fetch(self, task_ids: Sequence[str]) -> list[tuple[str, bytes]]:
        now = time.time()
        if len(task_ids) == 1:
            return self.db.read(lambda c: c.execute(
                "SELECT task_id, meta FROM celeriac_results WHERE task_id = ? "
                "AND (expires IS NULL OR expires >= ?)", (task_ids[0], now)).fetchall())
        out: list[tuple[str, bytes]] = []
        ids = list(task_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]

            def query(c: sqlite3.Connection, chunk: list[str] = chunk) -> list[Any]:
                return c.execute(
                    f"SELECT task_id, meta FROM celeriac_results WHERE task_id IN ({','.join('?' * len(chunk))}) "
                    "AND (expires IS NULL OR expires >= ?)", (*chunk, now)).fetchall()

            out.extend(self.db.read(query))
        return out

    def get_many(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {tid: self.decode(data) for tid, data in self._fetch(task_ids)}

    def wait(self, task_id: str, timeout: float) -> dict[str, Any] | None:
        bell = self.db.doorbell()
        deadline = time.monotonic() + timeout
        while True:
            bell.arm()
            meta = self.get(task_id)
            if meta is not None and meta.get("status") in states.READY_STATES:
                return meta
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return meta
            # Re-check at least every second even when event-driven, in case the
            # database sits on a file system that does not report writes.
            bell.wait(min(remaining, 1.0))

    def _record_chord_parts(self, parts: Sequence[ChordPart]) -> list[tuple[ChordPart, list[tuple[int, bytes]]]]:
        expires = None if self.expires is None else time.time() + self.expires

        def record(c: sqlite3.Connection) -> list[tuple[ChordPart, list[tuple[int, bytes]]]]:
            fired = []
            for part in parts:
                new = c.execute("INSERT OR IGNORE INTO celeriac_chord_parts(group_id, idx, meta) VALUES (?, ?, ?)",
                                (part.group_id, part.index, part.data)).rowcount
                if not new:  # the same header again (redelivered): keep its latest outcome, count it once
                    c.execute("UPDATE celeriac_chord_parts SET meta = ? WHERE group_id = ? AND idx = ?",
                              (part.data, part.group_id, part.index))
                done, fired_by = c.execute(
                    "INSERT INTO celeriac_chords(group_id, done, fired_by, expires) VALUES (?, ?, NULL, ?) "
                    "ON CONFLICT(group_id) DO UPDATE SET done = done + excluded.done, expires = excluded.expires "
                    "RETURNING done, fired_by", (part.group_id, new, expires)).fetchone()
                # The size the parts carried (a lazy header tells only its last part) + added members.
                size, added = c.execute(
                    "INSERT INTO celeriac_chord_sizes(group_id, size, added) VALUES (?, ?, 0) "
                    "ON CONFLICT(group_id) DO UPDATE SET size = max(size, excluded.size) RETURNING size, added",
                    (part.group_id, part.size)).fetchone()
                if fired_by is None and (part.failed or (size and done >= size + added)):
                    c.execute("UPDATE celeriac_chords SET fired_by = ? WHERE group_id = ?",
                              (part.task_id, part.group_id))
                    fired_by = part.task_id
                if fired_by == part.task_id:
                    part.size = int(size + added)
                    fired.append((part, [(int(i), bytes(m)) for i, m in c.execute(
                        "SELECT idx, meta FROM celeriac_chord_parts WHERE group_id = ? ORDER BY idx",
                        (part.group_id,))]))
            return fired

        return self.db.write(record)

    def chord_extend(self, group_id: str, count: int = 1) -> int:
        return int(self.db.write(lambda c: c.execute(
            "INSERT INTO celeriac_chord_sizes(group_id, size, added) VALUES (?, 0, ?) "
            "ON CONFLICT(group_id) DO UPDATE SET added = added + excluded.added RETURNING added",
            (group_id, count)).fetchone()[0]))

    def schedule_store(self, name: str, publish: Publisher) -> ScheduleStore | None:
        return SQLiteScheduleStore(self.db, name, publish)

    def event_channel(self) -> EventChannel | None:
        return SQLiteEventChannel(self.db, int(self.options.get("events_max_len", 10000)))

    def worker_heartbeat(self, worker_id: str, ttl: float, info: dict[str, Any] | None) -> None:
        if info is None:
            self.db.write(lambda c: c.execute("DELETE FROM celeriac_worker_beats WHERE worker_id = ?", (worker_id,)))
            return
        self.db.write(lambda c: c.execute(
            "INSERT INTO celeriac_worker_beats(worker_id, info, expires) VALUES (?, ?, ?) ON CONFLICT(worker_id) "
            "DO UPDATE SET info = excluded.info, expires = excluded.expires",
            (worker_id, json.dumps(info), time.time() + ttl)))

    def live_workers(self) -> dict[str, dict[str, Any]]:
        rows = self.db.read(lambda c: c.execute(
            "SELECT worker_id, info FROM celeriac_worker_beats WHERE expires >= ?", (time.time(),)).fetchall())
        return {str(r[0]): json.loads(r[1]) for r in rows}

    def control_send(self, command: dict[str, Any], expires_in: float) -> None:
        now = time.time()

        def send(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM celeriac_control WHERE expires < ?", (now,))
            c.execute("DELETE FROM celeriac_replies WHERE expires < ?", (now,))
            c.execute("INSERT INTO celeriac_control(command, expires) VALUES (?, ?)",
                      (json.dumps(command), now + expires_in))

        self.db.write(send)

    def control_since(self, cursor: int) -> tuple[list[dict[str, Any]], int]:
        now = time.time()
        if cursor < 0:
            last = self.db.read(lambda c: c.execute("SELECT MAX(seq) FROM celeriac_control").fetchone()[0])
            return [], int(last or 0)
        rows = self.db.read(lambda c: c.execute(
            "SELECT seq, command FROM celeriac_control WHERE seq > ? AND expires >= ? ORDER BY seq",
            (cursor, now)).fetchall())
        return [json.loads(r[1]) for r in rows], max([cursor] + [int(r[0]) for r in rows])

    def control_reply(self, reply_id: str, reply: dict[str, Any], expires_in: float) -> None:
        self.db.write(lambda c: c.execute("INSERT INTO celeriac_replies(reply_id, reply, expires) VALUES (?, ?, ?)",
                                          (reply_id, json.dumps(reply), time.time() + expires_in)))

    def control_replies(self, reply_id: str) -> list[dict[str, Any]]:
        rows = self.db.read(lambda c: c.execute(
            "SELECT reply FROM celeriac_replies WHERE reply_id = ? ORDER BY rowid", (reply_id,)).fetchall())
        return [json.loads(r[0]) for r in rows]

    def reserve_rate_slot(self, key: str, interval: float) -> float:
        def reserve(c: sqlite3.Connection) -> float:
            now = time.time()
            row = c.execute("SELECT next_free FROM celeriac_rate WHERE key = ?", (key,)).fetchone()
            start = max(now, float(row[0]) if row else 0.0)
            c.execute("INSERT INTO celeriac_rate(key, next_free) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                      "SET next_free = excluded.next_free", (key, start + interval))
            return start - now

        return float(self.db.write(reserve))

    def claim_unique(self, key: str, task_id: str, ttl: float) -> str:
        def claim(c: sqlite3.Connection) -> str:
            # One write transaction: an expired hold is replaced, a live one is kept and named.
            now = time.time()
            c.execute("INSERT INTO celeriac_unique(key, task_id, held_until) VALUES (?, ?, ?) "
                      "ON CONFLICT(key) DO UPDATE SET task_id = excluded.task_id, held_until = excluded.held_until "
                      "WHERE celeriac_unique.held_until <= ?", (key, task_id, now + ttl, now))
            row = c.execute("SELECT task_id FROM celeriac_unique WHERE key = ?", (key,)).fetchone()
            return str(row[0])

        return str(self.db.write(claim))

    def release_unique(self, held: Sequence[tuple[str, str]]) -> None:
        if held:
            self.db.write(lambda c: c.executemany(
                "DELETE FROM celeriac_unique WHERE key = ? AND task_id = ?", list(held)))

    def revoke(self, task_ids: Sequence[str], expires_in: float, signal: str | None = None) -> None:
        expires = time.time() + expires_in
        self.db.write(lambda c: c.executemany(
            "INSERT INTO celeriac_revoked(task_id, signal, expires) VALUES (?, ?, ?)",
            [(t, signal, expires) for t in task_ids]))

    def revoked_since(self, cursor: int) -> tuple[list[tuple[str, str | None]], int]:
        now = time.time()
        rows = self.db.read(lambda c: c.execute(
            "SELECT seq, task_id, signal FROM celeriac_revoked WHERE seq > ? AND expires >= ? ORDER BY seq",
            (cursor, now)).fetchall())
        return [(str(t), s) for _seq, t, s in rows], max([cursor] + [int(r[0]) for r in rows])

    def forget(self, task_ids: Sequence[str]) -> None:
        self.db.write(lambda c: c.executemany(
            "DELETE FROM celeriac_results WHERE task_id = ?", [(t,) for t in as_id_list(task_ids)]))

    def cleanup(self) -> int:
        now = time.time()

        def clean(c: sqlite3.Connection) -> int:
            gone = c.execute("DELETE FROM celeriac_results WHERE expires IS NOT NULL AND expires < ?", (now,)).rowcount
            chords = [(g,) for (g,) in c.execute(
                "SELECT group_id FROM celeriac_chords WHERE expires IS NOT NULL AND expires < ?", (now,))]
            c.execute("DELETE FROM celeriac_revoked WHERE expires < ?", (now,))
            c.executemany("DELETE FROM celeriac_chord_parts WHERE group_id = ?", chords)
            c.executemany("DELETE FROM celeriac_chords WHERE group_id = ?", chords)
            c.executemany("DELETE FROM celeriac_chord_sizes WHERE group_id = ?", chords)
            return int(gone)

        gone = self.db.write(clean)
        self.trim_history()
        return gone

    def close(self) -> None:
        self.history_buffer.flush()
        super().close()

    def task_history(self, query: HistoryQuery) -> list[TaskRecord]:
        self.history_buffer.flush()
        return self.history_db.read(lambda c: sqlite_history.query(c, query))

    def _history_floor(self, query: HistoryQuery, scan: int) -> float | None:
        self.history_buffer.flush()
        return self.history_db.read(lambda c: sqlite_history.floor(c, query, scan))

    def task_record(self, task_id: str) -> TaskRecord | None:
        self.history_buffer.flush()
        return self.history_db.read(lambda c: sqlite_history.one(c, task_id))

    def task_counts(self) -> dict[tuple[str, str], int]:
        self.history_buffer.flush()
        return self.history_db.read(sqlite_history.counts)

    def trim_history(self) -> int:
        self.history_buffer.flush()
        return self.history_db.write(lambda c: sqlite_history.trim(c, self.history_expires, self.history_max))
