"""Results in PostgreSQL (by default the same database as a PostgreSQL broker, so a worker
writes a batch's results and acks in one transaction). Also the result store of a Redis or
RabbitMQ broker. Waiting for a result LISTENs: the worker NOTIFYs the ids that finished."""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Sequence

from ... import states
from .database import PostgresDatabase
from .wakeups import wait_for
from .state import CONTROL_LOCK, REVOKE_LOCK, PostgresEventChannel, PostgresScheduleStore, ordered_append
from ...brokers.base import EventChannel, Publisher, ScheduleStore
from ...history import HistoryBuffer, HistoryQuery, TaskRecord
from . import history as postgres_history
from ...backends.base import ChordPart, ResultStore, StoredResult, as_id_list

_READY_SQL = ",".join(f"'{s}'" for s in states.READY_STATES)
_NOTIFY_PAYLOAD = 7000  # bytes of task ids per NOTIFY (the server's limit is 8000)
_INLINE_RESULT = 3000  # bytes: a lone final result this small rides in its NOTIFY (base64), see _notice


def _notice(task_id: str, data: bytes) -> str:
    """The NOTIFY payload of one final result: its id, and the stored result itself when small,
    as a token "=<base64>" - its waiter then has it without a SELECT. Readers that only know
    ids (an older celeriac) see a token that names no task and pass it by."""
    if len(data) > _INLINE_RESULT:
        return task_id
    return f"{task_id} ={base64.b64encode(data).decode('ascii')}"


def _payloads(task_ids: Sequence[str]) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    size = 0
    for tid in task_ids:
        if size + len(tid) + 1 > _NOTIFY_PAYLOAD and current:
            out.append(" ".join(current))
            current, size = [], 0
        current.append(tid)
        size += len(tid) + 1
    if current:
        out.append(" ".join(current))
    return out


class PostgresResultStore(ResultStore):
    schemes = ("postgresql", "postgres")

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.db = PostgresDatabase.for_url(url, self.options)
        self.s = self.db.schema
        self.history_buffer = HistoryBuffer(self._write_history)
        upsert = ("ON CONFLICT (task_id) DO UPDATE SET status = excluded.status, meta = excluded.meta, "
                  f"expires = excluded.expires WHERE excluded.status IN ({_READY_SQL}) "
                  f"OR r.status NOT IN ({_READY_SQL}))")
        self._store_sql = (
            f"WITH u AS (INSERT INTO {self.s}.results AS r (task_id, status, meta, expires) "
            f"SELECT * FROM unnest(%b::text[], %b::text[], %b::bytea[], %b::float8[]) {upsert} "
            "SELECT pg_notify(%s, p) FROM unnest(%b::text[]) AS p")  # arrays in binary: see history._insert
        # One final result (a round trip's): plain parameters cost the worker less than arrays.
        self._store_one_sql = (
            f"WITH u AS (INSERT INTO {self.s}.results AS r (task_id, status, meta, expires) "
            f"VALUES (%s, %s, %b, %s::float8) {upsert} SELECT pg_notify(%s, %s)")

    def store(self, results: Sequence[StoredResult]) -> None:
        if not results:
            return
        now = time.time()
        # One row per task (the one the table's rule would keep: a final state wins), in id
        # order: concurrent batches lock rows in the same order.
        latest: dict[str, StoredResult] = {}
        for r in results:
            kept = latest.get(r.task_id)
            if kept is None or r.status in states.READY_STATES or kept.status not in states.READY_STATES:
                latest[r.task_id] = r
        rows = sorted(latest.values(), key=lambda r: r.task_id)
        # A final state is never replaced by an in-flight one (a late STARTED after SUCCESS).
        params = ([r.task_id for r in rows], [r.status for r in rows], [r.data for r in rows],
                  [None if r.expires_in is None else now + r.expires_in for r in rows])
        ready = [r.task_id for r in rows if r.status in states.READY_STATES]

        # One statement (one round trip): the upsert, and a NOTIFY of the ids that finished.
        if len(rows) == 1 and ready:
            self.db.run(self._store_one_sql, (*(p[0] for p in params), self.db.channel("r"),
                                              _notice(ready[0], rows[0].data)))
        else:
            self.db.run(self._store_sql, (*params, self.db.channel("r"), _payloads(ready)))
        history = [r.history for r in results if r.history is not None]
        if history:  # written in batches of many tasks (celeriac.history.HistoryBuffer)
            self.history_buffer.add(history)

    def _write_history(self, records: list[TaskRecord]) -> None:
        self.db.write(lambda c: postgres_history.write(c, self.s, records))

    def _fetch(self, task_ids: Sequence[str]) -> list[tuple[str, bytes]]:
        # One id (get(), ready(), a wait): a plain parameter costs the client less than an array.
        where, ids = ("task_id = %s", task_ids[0]) if len(task_ids) == 1 else ("task_id = ANY(%s)", list(task_ids))
        rows = self.db.read(lambda c: c.execute(
            f"SELECT task_id, meta FROM {self.s}.results WHERE {where} "
            "AND (expires IS NULL OR expires >= %s)", (ids, time.time())).fetchall())
        return [(str(t), bytes(m)) for t, m in rows]

    def get(self, task_id: str) -> dict[str, Any] | None:
        ahead = self.db.read_ahead()
        kept = ahead.take(task_id)
        if kept is not None:
            return self.decode(kept)
        ids = ahead.ids_to_read(task_id)
        if len(ids) == 1:
            rows = self._fetch(ids)
            found = self.decode(rows[0][1]) if rows else None
            if found is not None and found.get("status") in states.READY_STATES:
                ahead.read([(task_id, b"")], task_id)  # read: no longer one to read ahead
            return found
        several: list[tuple[str, str, bytes]] = self.db.read(lambda c: c.execute(
            f"SELECT task_id, status, meta FROM {self.s}.results WHERE task_id = ANY(%b::text[]) "
            "AND (expires IS NULL OR expires >= %s)", (ids, time.time())).fetchall())
        ahead.read([(str(t), bytes(m)) for t, status, m in several if status in states.READY_STATES], task_id)
        mine = [bytes(m) for t, _status, m in several if t == task_id]
        return self.decode(mine[0]) if mine else None

    def get_many(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not task_ids:
            return {}
        return {tid: self.decode(data) for tid, data in self._fetch(task_ids)}

    def wait(self, task_id: str, timeout: float) -> dict[str, Any] | None:
        latest: list[dict[str, Any] | None] = [None]

        def check() -> dict[str, Any] | None:
            meta = latest[0] = self.get(task_id)
            return meta if meta is not None and meta.get("status") in states.READY_STATES else None

        def delivered(data: bytes) -> dict[str, Any] | None:  # the result came in its NOTIFY
            meta = self.decode(data)
            if meta is None or meta.get("status") not in states.READY_STATES:
                return None
            self.db.read_ahead().read([(task_id, b"")], task_id)  # read: not one to read ahead
            return meta

        return wait_for(self.db, [f"r:{task_id}"], check, timeout, delivered=delivered) or latest[0]

    # --- chords ---

    def _record_chord_parts(self, parts: Sequence[ChordPart]) -> list[tuple[ChordPart, list[tuple[int, bytes]]]]:
        expires = None if self.expires is None else time.time() + self.expires
        s = self.s

        def record(c: Any) -> list[tuple[ChordPart, list[tuple[int, bytes]]]]:
            fired = []
            # Groups in one order, so that two workers recording parts of the same chords
            # lock their counter rows in the same order (no deadlock).
            for part in sorted(parts, key=lambda p: (p.group_id, p.index)):
                new = c.execute(f"INSERT INTO {s}.chord_parts (group_id, idx, meta) VALUES (%s, %s, %s) "
                                "ON CONFLICT (group_id, idx) DO UPDATE SET meta = excluded.meta "
                                "RETURNING (xmax = 0)", (part.group_id, part.index, part.data)).fetchone()[0]
                done, fired_by = c.execute(
                    f"INSERT INTO {s}.chords AS ch (group_id, done, fired_by, expires) VALUES (%s, %s, NULL, %s) "
                    "ON CONFLICT (group_id) DO UPDATE SET done = ch.done + excluded.done, expires = excluded.expires "
                    "RETURNING done, fired_by", (part.group_id, int(bool(new)), expires)).fetchone()
                # The size the parts carried (a lazy header tells only its last part) + added members.
                size, added = c.execute(
                    f"INSERT INTO {s}.chord_sizes AS cs (group_id, size, added) VALUES (%s, %s, 0) "
                    "ON CONFLICT (group_id) DO UPDATE SET size = greatest(cs.size, excluded.size) "
                    "RETURNING size, added", (part.group_id, part.size)).fetchone()
                if fired_by is None and (part.failed or (size and done >= size + added)):
                    c.execute(f"UPDATE {s}.chords SET fired_by = %s WHERE group_id = %s", (part.task_id, part.group_id))
                    fired_by = part.task_id
                if fired_by == part.task_id:
                    part.size = int(size + added)
                    fired.append((part, [(int(i), bytes(m)) for i, m in c.execute(
                        f"SELECT idx, meta FROM {s}.chord_parts WHERE group_id = %s ORDER BY idx",
                        (part.group_id,)).fetchall()]))
            return fired

        return self.db.write(record)

    def chord_extend(self, group_id: str, count: int = 1) -> int:
        return int(self.db.write(lambda c: c.execute(
            f"INSERT INTO {self.s}.chord_sizes AS cs (group_id, size, added) VALUES (%s, 0, %s) "
            "ON CONFLICT (group_id) DO UPDATE SET added = cs.added + excluded.added RETURNING added",
            (group_id, count)).fetchone()[0]))

    # --- state shared with brokers that keep none ---

    def schedule_store(self, name: str, publish: Publisher) -> ScheduleStore | None:
        return PostgresScheduleStore(self.db, name, publish)

    def event_channel(self) -> EventChannel | None:
        return PostgresEventChannel(self.db, int(self.options.get("events_max_len", 10000)))

    def worker_heartbeat(self, worker_id: str, ttl: float, info: dict[str, Any] | None) -> None:
        if info is None:
            self.db.write(lambda c: c.execute(f"DELETE FROM {self.s}.worker_beats WHERE worker_id = %s", (worker_id,)))
            return
        self.db.write(lambda c: c.execute(
            f"INSERT INTO {self.s}.worker_beats (worker_id, info, expires) VALUES (%s, %s, %s) "
            "ON CONFLICT (worker_id) DO UPDATE SET info = excluded.info, expires = excluded.expires",
            (worker_id, json.dumps(info), time.time() + ttl)))

    def live_workers(self) -> dict[str, dict[str, Any]]:
        rows = self.db.read(lambda c: c.execute(
            f"SELECT worker_id, info FROM {self.s}.worker_beats WHERE expires >= %s", (time.time(),)).fetchall())
        return {str(r[0]): json.loads(r[1]) for r in rows}

    # --- remote control ---

    def control_send(self, command: dict[str, Any], expires_in: float) -> None:
        now = time.time()

        def send(c: Any) -> None:
            ordered_append(c, CONTROL_LOCK)
            c.execute(f"DELETE FROM {self.s}.control WHERE expires < %s", (now,))
            c.execute(f"DELETE FROM {self.s}.replies WHERE expires < %s", (now,))
            c.execute(f"INSERT INTO {self.s}.control (command, expires) VALUES (%s, %s)",
                      (json.dumps(command), now + expires_in))

        self.db.write(send)

    def control_since(self, cursor: int) -> tuple[list[dict[str, Any]], int]:
        if cursor < 0:
            last = self.db.read(lambda c: c.execute(
                f"SELECT coalesce((SELECT last_value FROM {self.s}.control_seq_seq WHERE is_called), 0)").fetchone()[0])
            return [], int(last or 0)
        rows = self.db.read(lambda c: c.execute(
            f"SELECT seq, command FROM {self.s}.control WHERE seq > %s AND expires >= %s ORDER BY seq",
            (cursor, time.time())).fetchall())
        return [json.loads(r[1]) for r in rows], max([cursor] + [int(r[0]) for r in rows])

    def follow_logs(self, control_cursor: int, revoke_cursor: int) -> tuple[
            tuple[list[dict[str, Any]], int], tuple[list[tuple[str, str | None]], int]]:
        if control_cursor < 0:
            return super().follow_logs(control_cursor, revoke_cursor)
        now = time.time()
        rows = self.db.read(lambda c: c.execute(  # one round trip for both logs
            f"SELECT 0, seq, command, NULL FROM {self.s}.control WHERE seq > %s AND expires >= %s "
            f"UNION ALL SELECT 1, seq, task_id, signal FROM {self.s}.revoked WHERE seq > %s AND expires >= %s "
            "ORDER BY 1, 2", (control_cursor, now, revoke_cursor, now)).fetchall())
        control = [r for r in rows if r[0] == 0]
        revoked = [r for r in rows if r[0] == 1]
        return (([json.loads(r[2]) for r in control], max([control_cursor] + [int(r[1]) for r in control])),
                ([(str(r[2]), r[3]) for r in revoked], max([revoke_cursor] + [int(r[1]) for r in revoked])))

    def control_reply(self, reply_id: str, reply: dict[str, Any], expires_in: float) -> None:
        self.db.write(lambda c: c.execute(
            f"INSERT INTO {self.s}.replies (reply_id, reply, expires) VALUES (%s, %s, %s)",
            (reply_id, json.dumps(reply), time.time() + expires_in)))

    def control_replies(self, reply_id: str) -> list[dict[str, Any]]:
        rows = self.db.read(lambda c: c.execute(
            f"SELECT reply FROM {self.s}.replies WHERE reply_id = %s ORDER BY seq", (reply_id,)).fetchall())
        return [json.loads(r[0]) for r in rows]

    # --- rate limits, unique keys, revocations ---

    def reserve_rate_slot(self, key: str, interval: float) -> float:
        now = time.time()
        start = self.db.write(lambda c: c.execute(
            f"INSERT INTO {self.s}.rate AS r (key, next_free) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
            "SET next_free = greatest(r.next_free, %s) + %s RETURNING next_free",
            (key, now + interval, now, interval)).fetchone()[0])
        return max(0.0, float(start) - interval - now)

    def claim_unique(self, key: str, task_id: str, ttl: float) -> str:
        def claim(c: Any) -> str:
            # An expired hold is replaced, a live one is kept and named.
            now = time.time()
            row = c.execute(
                f"INSERT INTO {self.s}.unique_keys AS u (key, task_id, held_until) VALUES (%s, %s, %s) "
                "ON CONFLICT (key) DO UPDATE SET task_id = excluded.task_id, held_until = excluded.held_until "
                "WHERE u.held_until <= %s RETURNING task_id", (key, task_id, now + ttl, now)).fetchone()
            if row is None:
                row = c.execute(f"SELECT task_id FROM {self.s}.unique_keys WHERE key = %s", (key,)).fetchone()
            return str(row[0])

        return str(self.db.write(claim))

    def release_unique(self, held: Sequence[tuple[str, str]]) -> None:
        if held:
            keys, ids = [k for k, _ in held], [t for _, t in held]
            self.db.write(lambda c: c.execute(
                f"DELETE FROM {self.s}.unique_keys AS u USING unnest(%s::text[], %s::text[]) AS h(key, task_id) "
                "WHERE u.key = h.key AND u.task_id = h.task_id", (keys, ids)))

    def revoke(self, task_ids: Sequence[str], expires_in: float, signal: str | None = None) -> None:
        expires = time.time() + expires_in

        def add(c: Any) -> None:
            ordered_append(c, REVOKE_LOCK)
            c.execute(f"INSERT INTO {self.s}.revoked (task_id, signal, expires) "
                      "SELECT t, %s, %s FROM unnest(%s::text[]) AS t", (signal, expires, list(task_ids)))

        self.db.write(add)

    def revoked_since(self, cursor: int) -> tuple[list[tuple[str, str | None]], int]:
        rows = self.db.read(lambda c: c.execute(
            f"SELECT seq, task_id, signal FROM {self.s}.revoked WHERE seq > %s AND expires >= %s ORDER BY seq",
            (cursor, time.time())).fetchall())
        return [(str(t), s) for _seq, t, s in rows], max([cursor] + [int(r[0]) for r in rows])

    # --- cleanup ---

    def forget(self, task_ids: Sequence[str]) -> None:
        ids = as_id_list(task_ids)
        self.db.read_ahead().forget(ids)
        self.db.write(lambda c: c.execute(f"DELETE FROM {self.s}.results WHERE task_id = ANY(%s)", (ids,)))

    def cleanup(self) -> int:
        now = time.time()
        s = self.s

        def clean(c: Any) -> int:
            gone = c.execute(f"DELETE FROM {s}.results WHERE expires IS NOT NULL AND expires < %s", (now,)).rowcount
            c.execute(f"DELETE FROM {s}.revoked WHERE expires < %s", (now,))
            chords = [g for (g,) in c.execute(
                f"DELETE FROM {s}.chords WHERE expires IS NOT NULL AND expires < %s RETURNING group_id", (now,))]
            if chords:
                c.execute(f"DELETE FROM {s}.chord_parts WHERE group_id = ANY(%s)", (chords,))
                c.execute(f"DELETE FROM {s}.chord_sizes WHERE group_id = ANY(%s)", (chords,))
            c.execute(f"DELETE FROM {s}.unique_keys WHERE held_until < %s", (now,))
            return int(gone)

        gone = self.db.write(clean)
        self.trim_history()
        return gone

    def close(self) -> None:
        self.history_buffer.flush()
        self.db.close_thread()

    # --- task history ---

    def task_history(self, query: HistoryQuery) -> list[TaskRecord]:
        self.history_buffer.flush()
        return self.db.read(lambda c: postgres_history.query(c, self.s, query))

    def _history_floor(self, query: HistoryQuery, scan: int) -> float | None:
        self.history_buffer.flush()
        return self.db.read(lambda c: postgres_history.floor(c, self.s, query, scan))

    def task_record(self, task_id: str) -> TaskRecord | None:
        self.history_buffer.flush()
        return self.db.read(lambda c: postgres_history.one(c, self.s, task_id))

    def task_counts(self) -> dict[tuple[str, str], int]:
        self.history_buffer.flush()
        return self.db.read(lambda c: postgres_history.counts(c, self.s))

    def trim_history(self) -> int:
        self.history_buffer.flush()
        return self.db.write(lambda c: postgres_history.trim(c, self.s, self.history_expires, self.history_max))
