"""Beat's fenced schedule store and the event stream, in PostgreSQL tables.

Both are shared by the PostgreSQL broker and the PostgreSQL result store (which serves
them to a RabbitMQ broker that has no state of its own).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from .database import PostgresDatabase
from .wakeups import wait_for
from ...brokers.base import EventChannel, EventSubscription, LeaseState, Publisher, ScheduleStore, Tick

# Advisory lock keys: appends to a log that readers follow by sequence number take it, so
# that numbers become visible in order (a reader never skips a row that commits later with
# a smaller number).
EVENTS_LOCK = 0x65766E74
CONTROL_LOCK = 0x6374726C
REVOKE_LOCK = 0x7276636B


def ordered_append(conn: Any, key: int) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))


class PostgresScheduleStore(ScheduleStore):
    """Beat's lease and ticks. `fire` checks the lease (row locked), records the ticks and
    publishes in one transaction: with the PostgreSQL broker a tick is sent and recorded
    together or not at all; with another broker the publish happens before the commit, so a
    crash in between can send a tick twice but never loses one."""

    def __init__(self, db: PostgresDatabase, name: str, publish: Publisher) -> None:
        self.db, self.name, self.publish = db, name, publish
        self.s = db.schema

    def lease(self, holder: str, ttl: float) -> int | None:
        def take(c: Any) -> int | None:
            now = time.time()
            c.execute(f"INSERT INTO {self.s}.beat_leases (name, holder, token, expires) VALUES (%s, NULL, 0, 0) "
                      "ON CONFLICT (name) DO NOTHING", (self.name,))
            row = c.execute(f"SELECT holder, token, expires FROM {self.s}.beat_leases WHERE name = %s FOR UPDATE",
                            (self.name,)).fetchone()
            if row[0] == holder and row[2] > now:
                c.execute(f"UPDATE {self.s}.beat_leases SET expires = %s WHERE name = %s", (now + ttl, self.name))
                return int(row[1])
            if row[0] is not None and row[2] > now:
                return None
            token = int(row[1]) + 1
            c.execute(f"UPDATE {self.s}.beat_leases SET holder = %s, token = %s, expires = %s WHERE name = %s",
                      (holder, token, now + ttl, self.name))
            return token

        return self.db.write(take)

    def release(self, holder: str) -> None:
        self.db.write(lambda c: c.execute(
            f"UPDATE {self.s}.beat_leases SET holder = NULL, expires = 0 WHERE name = %s AND holder = %s",
            (self.name, holder)))

    def lease_state(self) -> LeaseState:
        row = self.db.read(lambda c: c.execute(
            f"SELECT holder, token, expires FROM {self.s}.beat_leases WHERE name = %s", (self.name,)).fetchone())
        if row is None:
            return LeaseState(None, 0, 0.0)
        expires_in = float(row[2]) - time.time()
        return LeaseState(row[0] if expires_in > 0 else None, int(row[1]), expires_in)

    def last_ticks(self) -> dict[str, float]:
        rows = self.db.read(lambda c: c.execute(
            f"SELECT entry, last FROM {self.s}.beat_ticks WHERE name = %s", (self.name,)).fetchall())
        return {str(e): float(last) for e, last in rows}

    def fire(self, holder: str, token: int, ticks: Sequence[Tick]) -> list[str] | None:
        def run(c: Any) -> list[str] | None:
            row = c.execute(f"SELECT holder, token, expires FROM {self.s}.beat_leases WHERE name = %s FOR UPDATE",
                            (self.name,)).fetchone()
            if row is None or row[0] != holder or int(row[1]) != token or row[2] <= time.time():
                return None
            fired, messages = [], []
            for tick in ticks:
                recorded = c.execute(
                    f"INSERT INTO {self.s}.beat_ticks (name, entry, last) VALUES (%s, %s, %s) "
                    "ON CONFLICT (name, entry) DO UPDATE SET last = excluded.last "
                    "WHERE beat_ticks.last < excluded.last RETURNING entry",
                    (self.name, tick.entry, tick.at)).fetchone()
                if recorded is None:
                    continue
                fired.append(tick.entry)
                if tick.message is not None:
                    messages.append(tick.message)
            if messages:
                self.publish(messages)  # joins this transaction when the broker is this database
            return fired

        return self.db.write(run)


class PostgresEventChannel(EventChannel):
    """Events in a table: one insert per batch, which also deletes the rows older than the
    newest `max_len` (a range delete on the primary key), and NOTIFYs the readers."""

    def __init__(self, db: PostgresDatabase, max_len: int) -> None:
        self.db, self.max_len = db, max(100, int(max_len))
        self.s = db.schema

    def send(self, events: Sequence[bytes]) -> None:
        if not events:
            return

        def put(c: Any) -> None:
            ordered_append(c, EVENTS_LOCK)
            last = c.execute(f"INSERT INTO {self.s}.events (body) SELECT * FROM unnest(%s::bytea[]) "
                             "RETURNING seq", (list(events),)).fetchall()[-1][0]
            c.execute(f"DELETE FROM {self.s}.events WHERE seq <= %s", (int(last) - self.max_len,))
            self.db.notify(c, "e", [""])

        self.db.write(put)

    def subscribe(self) -> EventSubscription:
        return _PostgresEventSubscription(self.db)


class _PostgresEventSubscription(EventSubscription):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db, self.s = db, db.schema
        # The newest number handed out: what comes next is new (rows may all have been pruned).
        self.cursor = int(db.read(lambda c: c.execute(
            f"SELECT coalesce((SELECT last_value FROM {self.s}.events_seq_seq WHERE is_called), 0)")
            .fetchone()[0]))
        self.missed = 0

    def _read(self) -> list[bytes] | None:
        rows = self.db.read(lambda c: c.execute(
            f"SELECT seq, body FROM {self.s}.events WHERE seq > %s ORDER BY seq LIMIT 2000",
            (self.cursor,)).fetchall())
        if not rows:
            return None
        first = int(rows[0][0])
        if first > self.cursor + 1:
            self.missed += first - self.cursor - 1  # pruned before we read them
        self.cursor = int(rows[-1][0])
        return [bytes(body) for _seq, body in rows]

    def next_batch(self, timeout: float) -> list[bytes]:
        if timeout <= 0:
            return self._read() or []
        return wait_for(self.db, ["e"], self._read, timeout) or []
