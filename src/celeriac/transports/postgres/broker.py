"""The PostgreSQL broker: messages in a table, claimed in batches with FOR UPDATE SKIP LOCKED.

A fetch is a lease (owner + worker), never delete-on-read: SIGKILL loses nothing, and only
the messages of a worker whose heartbeat lease ran out are given back. Delayed messages wait
in their own table and are moved to the ready table by the fetch that finds them due.
Publishing NOTIFYs the queue's name, so idle workers wake at once (docs/postgresql.md).
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Sequence

from .database import PostgresDatabase
from .siblings import SIBLINGS
from .wakeups import wait_for
from .state import PostgresEventChannel, PostgresScheduleStore
from ...protocol import priority_of
from ...brokers.base import (Broker, DeadLetter, Delivery, EventChannel, Outgoing, Publisher, ScheduleStore,
                             clamp_priority, oldest_of)

QUIET_FOR = 1.0  # seconds a process trusts its own empty claim and its listener instead of looking again

# The claimed ids are a MATERIALIZED CTE: evaluated exactly once. As a subquery in FROM, the
# planner may run the LIMIT ... SKIP LOCKED scan again (a rescan of the join) and claim more
# rows than the limit - seen under load: a fetch of 3 returned 4.
# A claim that finds nothing also says when the first delayed message is due (one row without
# an id): a waiting fetch sleeps until then at most, without a query of its own for it.
_LEASE = """
u AS (UPDATE {s}.messages AS m SET owner = %(owner)s, worker = %(worker)s, deliveries = m.deliveries + 1
      FROM c WHERE m.id = c.id RETURNING m.id, m.queue, m.priority, m.deliveries, m.payload)
SELECT id, queue, priority, deliveries, payload, NULL::float8 FROM u
UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, min(eta) FROM {s}.delayed HAVING NOT EXISTS (SELECT FROM u)
"""
_CLAIM_ONE = """
WITH c AS MATERIALIZED (
    SELECT id FROM {s}.messages WHERE owner IS NULL AND queue = %(queue)s
    ORDER BY priority DESC, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED),
""" + _LEASE
# Several queues: one ordered index range per queue, merged (a sort of the whole backlog of
# `queue = ANY(...) ORDER BY priority DESC, id` is what this avoids).
_CLAIM_MANY = """
WITH c AS MATERIALIZED (
    SELECT c.id FROM unnest(%(queues)s::text[]) AS q(name),
    LATERAL (SELECT id, priority FROM {s}.messages WHERE owner IS NULL AND queue = q.name
             ORDER BY priority DESC, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) AS c
    ORDER BY c.priority DESC, c.id LIMIT %(limit)s),
""" + _LEASE
_PROMOTE = """
WITH due AS (
    DELETE FROM {s}.delayed WHERE id IN (
        SELECT id FROM {s}.delayed WHERE eta <= %s ORDER BY eta, id LIMIT 5000 FOR UPDATE SKIP LOCKED)
    RETURNING id, eta, queue, priority, payload)
INSERT INTO {s}.messages (queue, priority, payload)
SELECT queue, priority, payload FROM due ORDER BY eta, id
"""


def publish_statement(schema: str, messages: Sequence[Outgoing]) -> tuple[str, tuple[Any, ...]]:
    """The one statement that publishes `messages` (the sync and asyncio clients run it): an
    insert per table whatever the count (arrays unnested in order: FIFO), and a NOTIFY of
    each queue so that idle workers wake. One statement: one round trip in autocommit. The
    arrays travel in binary (%b): a 10,000-message group is 2-3 times faster than as text."""
    now = time.time()
    if len(messages) == 1:  # delay(): plain parameters cost the client a third less than arrays
        m = messages[0]
        if m.eta is None or m.eta <= now:
            return (f"WITH r AS (INSERT INTO {schema}.messages (queue, priority, payload) "
                    "VALUES (%s, %s::smallint, %b)) SELECT pg_notify(%s, %s)",
                    (m.queue, clamp_priority(m.priority), m.payload, f"{schema}_q", m.queue))
        return (f"WITH d AS (INSERT INTO {schema}.delayed (eta, queue, priority, payload) "
                "VALUES (%s::float8, %s, %s::smallint, %b)) SELECT pg_notify(%s, %s)",
                (m.eta, m.queue, clamp_priority(m.priority), m.payload, f"{schema}_q", m.queue))
    ready = [(m.queue, clamp_priority(m.priority), m.payload) for m in messages if m.eta is None or m.eta <= now]
    delayed = [(m.eta, m.queue, clamp_priority(m.priority), m.payload) for m in messages
               if m.eta is not None and m.eta > now]
    parts: list[str] = []
    params: list[Any] = []
    if ready:
        parts.append(f"r AS (INSERT INTO {schema}.messages (queue, priority, payload) "
                     "SELECT * FROM unnest(%b::text[], %b::smallint[], %b::bytea[]))")
        params += map(list, zip(*ready, strict=True))
    if delayed:
        parts.append(f"d AS (INSERT INTO {schema}.delayed (eta, queue, priority, payload) "
                     "SELECT * FROM unnest(%b::float8[], %b::text[], %b::smallint[], %b::bytea[]))")
        params += map(list, zip(*delayed, strict=True))
    params += [f"{schema}_q", sorted({m.queue for m in messages})]
    return f"WITH {', '.join(parts)} SELECT pg_notify(%s, p) FROM unnest(%b::text[]) AS p", tuple(params)


VACUUM_EVERY = 5.0  # seconds between two vacuums of the hot tables by one worker
# From this many ready messages on, a publish writes them with COPY (binary) instead of one
# INSERT ... unnest: the server takes a 10,000-member group in about half the time; below,
# the statement's single round trip in autocommit costs less than a transaction around COPY.
COPY_FROM = 1000
COPY_TYPES = ["text", "int2", "bytea"]


def copy_plan(schema: str, messages: Sequence[Outgoing]) -> tuple[str, list[tuple[Any, ...]], tuple[str, Any]] | None:
    """How the sync and asyncio clients COPY `messages` (the COPY statement, its rows in the
    order given - ids follow it: FIFO - and the NOTIFY of their queues), or None when the
    batch is small or holds a delayed message (then publish_statement)."""
    if len(messages) < COPY_FROM or any(m.eta for m in messages):
        return None
    rows = [(m.queue, clamp_priority(m.priority), m.payload) for m in messages]
    notify = ("SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p",
              (f"{schema}_q", sorted({m.queue for m in messages})))
    return f"COPY {schema}.messages (queue, priority, payload) FROM STDIN (FORMAT BINARY)", rows, notify


def copy_messages(conn: Any, plan: tuple[str, list[tuple[Any, ...]], tuple[str, Any]]) -> None:
    """Run a copy_plan inside the caller's transaction."""
    statement, rows, notify = plan
    with conn.cursor().copy(statement) as copy:
        copy.set_types(COPY_TYPES)
        for row in rows:
            copy.write_row(row)
    conn.execute(*notify)


class PostgresBroker(Broker):
    schemes = ("postgresql", "postgres")
    transactional = True

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options)
        self.db = PostgresDatabase.for_url(url, self.options)
        # A worker's pool processes woken together claim once (siblings.py); False: each claims.
        self._claims_shared = bool(self.options.get("claims_shared", True))
        self._keys: dict[tuple[str, ...], int] = {}
        self._empty_at: dict[int, float] = {}  # queue-set key -> start of this process's last claim that left none
        s = self.db.schema
        self.s = s
        self._claim_one = _CLAIM_ONE.format(s=s)
        self._claim_many = _CLAIM_MANY.format(s=s)
        self._promote = _PROMOTE.format(s=s)
        self._next_promote = 0.0  # monotonic: when to look for due delayed messages again
        self._next_vacuum = 0.0
        self._due_at: float | None = None  # epoch seconds: the first delayed message's eta, per the last empty claim

    # --- publish ---

    def publish(self, messages: Sequence[Outgoing]) -> None:
        # An application's connection (app.transaction) may be another driver's: it gets the INSERT.
        plan = copy_plan(self.s, messages) if self.db.enlisted() is None else None
        if plan is not None:
            self.db.write(lambda conn: copy_messages(conn, plan))
        elif messages:
            self.db.run(*publish_statement(self.s, messages))
        if messages:
            # Whose results this process may read in that order (readahead.py).
            self.db.read_ahead().note_sent(m.message.task_id for m in messages
                                           if m.message is not None and not m.message.headers.get("ignore_result"))

    # --- fetch ---

    def _claim_statement(self, queues: Sequence[str], worker_id: str, owner: str,
                         limit: int) -> tuple[str, dict[str, Any]]:
        params: dict[str, Any] = {"owner": owner, "worker": worker_id, "limit": limit}
        if len(queues) == 1:
            return self._claim_one, {**params, "queue": queues[0]}
        return self._claim_many, {**params, "queues": list(queues)}

    def _promote_due(self) -> None:
        # A lost claim or move (the server crashed before flushing them) is harmless: the
        # message is simply claimable, or delayed, again. So neither waits for the flush.
        if time.monotonic() >= self._next_promote:
            self.db.run(self._promote, (time.time(),), durable=False)
            self._next_promote = time.monotonic() + 0.05

    def _deliveries(self, rows: list[Any], owner: str) -> list[Delivery]:
        leased = [r for r in rows if r[0] is not None]
        if len(leased) < len(rows):  # found nothing: the row that says when a delay ends
            self._due_at = rows[0][5]
        leased.sort(key=lambda r: (-r[2], r[0]))
        return [Delivery(str(r[0]), r[1], bytes(r[4]), r[3], r[2], owner) for r in leased]

    def _claim(self, queues: Sequence[str], worker_id: str, owner: str, limit: int) -> list[Delivery]:
        self._promote_due()
        rows = self.db.run(*self._claim_statement(queues, worker_id, owner, limit), fetch=True, durable=False)
        return self._deliveries(rows, owner)

    def claim_at_commit(self, queues: Sequence[str], worker_id: str, owner: str,
                        limit: int) -> Callable[[], list[Delivery]] | None:
        # In the pipeline of the batch's own transaction: a busy slot's next claim costs no
        # round trip and no commit of its own. Rolled back with the batch if it fails.
        if self.db.enlisted() is not None or not self.db.in_transaction():
            return None
        self._promote_due()  # joins the transaction's pipeline too (a write without rows)
        started = time.monotonic()  # before the statement runs, at the commit: earlier is the safe side
        rows = self.db.rows_at_commit(*self._claim_statement(queues, worker_id, owner, limit))

        def deliveries() -> list[Delivery]:
            found = self._deliveries(rows, owner)
            self._note_claim(self._queue_key(queues), started, len(found) < limit)
            return found

        return deliveries

    def claim_now(self, queues: Sequence[str], worker_id: str, owner: str, limit: int) -> list[Delivery] | None:
        if self.db.in_transaction():
            return None
        return self._claim(queues, worker_id, owner, limit)

    def _next_due_in(self) -> float | None:
        """When the first delayed message is due, as the last claim (which found nothing) said."""
        if self._due_at is None:
            return None
        due_in = max(0.0, float(self._due_at) - time.time())
        self._next_promote = min(self._next_promote, time.monotonic() + due_in)
        return due_in

    def fetch(self, queues: Sequence[str], worker_id: str, owner: str, limit: int,
              timeout: float, in_flight: int = 0) -> list[Delivery]:
        key = self._queue_key(queues)

        def check() -> list[Delivery] | None:
            if not self._claims_shared:
                return self._claim(queues, worker_id, owner, limit) or None
            with SIBLINGS.claiming() as turn:
                return self._claim_noting_drain(queues, worker_id, owner, limit, key if turn else None) or None

        def notified(notified_at: float) -> list[Delivery] | None:
            # Woken by notifications only: a sibling's claim may have seen their messages (siblings.py).
            if SIBLINGS.drained_since(key, notified_at):
                return None
            with SIBLINGS.claiming() as turn:
                if turn and SIBLINGS.drained_since(key, notified_at):
                    return None
                return self._claim_noting_drain(queues, worker_id, owner, limit, key if turn else None) or None

        keys = [f"q:{q}" for q in queues]

        def first_look() -> bool:
            # This process's last claim left the queues empty, it has listened since and heard
            # nothing: nothing was committed since that claim's snapshot (a worker's slot comes
            # back here right after its batch's claim found nothing). At most QUIET_FOR old.
            empty_at = self._empty_at.get(key)
            return empty_at is None or time.monotonic() - empty_at > QUIET_FOR or \
                not self.db.wakeups().quiet_since(keys, empty_at)

        if timeout <= 0:
            return self._claim(queues, worker_id, owner, limit)
        if not self._claims_shared:
            return wait_for(self.db, keys, check, timeout, self._next_due_in) or []
        return wait_for(self.db, keys, check, timeout, self._next_due_in, notified=notified,
                        first_look=first_look) or []

    def _claim_noting_drain(self, queues: Sequence[str], worker_id: str, owner: str, limit: int,
                            key: int | None) -> list[Delivery]:
        """A claim; one that found fewer messages than `limit` tells the siblings (with `key`:
        only while holding the claim turn)."""
        started = time.monotonic()
        found = self._claim(queues, worker_id, owner, limit)
        self._note_claim(self._queue_key(queues), started, len(found) < limit)
        if key is not None and len(found) < limit:
            SIBLINGS.mark_drained(key, started)
        return found

    def _queue_key(self, queues: Sequence[str]) -> int:
        wanted = tuple(queues)
        key = self._keys.get(wanted)
        if key is None:
            key = self._keys[wanted] = SIBLINGS.key(f"{self.db.conninfo}\0{self.s}", queues)
        return key

    def _note_claim(self, key: int, started: float, emptied: bool) -> None:
        if emptied:
            self._empty_at[key] = started
        else:
            self._empty_at.pop(key, None)

    # --- outcomes ---

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if len(deliveries) == 1:
            self.db.run(f"DELETE FROM {self.s}.messages WHERE id = %s", (int(deliveries[0].tag),))
        elif deliveries:
            self.db.run(f"DELETE FROM {self.s}.messages WHERE id = ANY(%b::bigint[])",
                        ([int(d.tag) for d in deliveries],))

    def release(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        # Only the current lease: a worker whose lease expired (and whose message went to
        # another worker) must not take the message away from its new owner.
        ids, owners = [int(d.tag) for d in deliveries], [d.owner for d in deliveries]
        queues = sorted({d.queue for d in deliveries})

        def give_back(conn: Any) -> None:
            conn.execute(
                f"UPDATE {self.s}.messages AS m SET owner = NULL, worker = NULL, "
                "deliveries = greatest(0, m.deliveries - 1) FROM unnest(%s::bigint[], %s::text[]) AS r(id, owner) "
                "WHERE m.id = r.id AND m.owner = r.owner", (ids, owners))
            self.db.notify(conn, "q", queues)

        self.db.write(give_back)

    def requeue_owner(self, owner: str, running_tag: str | None, keep_all_counts: bool = False) -> int:
        running = int(running_tag) if running_tag else -1

        def requeue(conn: Any) -> int:
            rows = conn.execute(
                f"UPDATE {self.s}.messages SET owner = NULL, worker = NULL, deliveries = CASE "
                "WHEN id = %s OR %s THEN deliveries ELSE greatest(0, deliveries - 1) END "
                "WHERE owner = %s RETURNING queue", (running, keep_all_counts, owner)).fetchall()
            self.db.notify(conn, "q", sorted({r[0] for r in rows}))
            return len(rows)

        return int(self.db.write(requeue))

    def dead_letter(self, items: Sequence[tuple[Delivery, str]]) -> None:
        if not items:
            return
        now = time.time()

        def move(conn: Any) -> None:
            with conn.cursor() as cur:
                cur.executemany(f"INSERT INTO {self.s}.dead (queue, payload, reason, at, deliveries) "
                                "VALUES (%s, %s, %s, %s, %s)",
                                [(d.queue, d.payload, reason, now, d.deliveries) for d, reason in items])
            conn.execute(f"DELETE FROM {self.s}.messages WHERE id = ANY(%s)", ([int(d.tag) for d, _ in items],))

        self.db.write(move)

    # --- liveness ---

    def heartbeat(self, worker_id: str, ttl: float, info: dict[str, Any] | None = None) -> None:
        expires, text = time.time() + ttl, json.dumps(info or {})
        self.db.write(lambda c: c.execute(
            f"INSERT INTO {self.s}.workers (worker, expires, info) VALUES (%s, %s, %s) "
            "ON CONFLICT (worker) DO UPDATE SET expires = excluded.expires, info = excluded.info",
            (worker_id, expires, text)))

    def unregister(self, worker_id: str) -> int:
        def drop(conn: Any) -> int:
            conn.execute(f"DELETE FROM {self.s}.workers WHERE worker = %s", (worker_id,))
            rows = conn.execute(f"UPDATE {self.s}.messages SET owner = NULL, worker = NULL "
                                "WHERE worker = %s AND owner IS NOT NULL RETURNING queue", (worker_id,)).fetchall()
            self.db.notify(conn, "q", sorted({r[0] for r in rows}))
            return len(rows)

        return int(self.db.write(drop))

    def recover(self) -> int:
        def sweep(conn: Any) -> int:
            conn.execute(f"DELETE FROM {self.s}.workers WHERE expires < %s", (time.time(),))
            rows = conn.execute(
                f"UPDATE {self.s}.messages SET owner = NULL, worker = NULL WHERE owner IS NOT NULL "
                f"AND worker NOT IN (SELECT worker FROM {self.s}.workers) RETURNING queue").fetchall()
            self.db.notify(conn, "q", sorted({r[0] for r in rows}))
            return len(rows)

        return int(self.db.write(sweep))

    def live_workers(self) -> dict[str, dict[str, Any]]:
        rows = self.db.read(lambda c: c.execute(
            f"SELECT worker, info FROM {self.s}.workers WHERE expires >= %s", (time.time(),)).fetchall())
        return {str(r[0]): json.loads(r[1] or "{}") for r in rows}

    def held_messages(self, worker_id: str) -> list[tuple[str, bytes]] | None:
        rows = self.db.read(lambda c: c.execute(
            f"SELECT owner, payload FROM {self.s}.messages WHERE worker = %s AND owner IS NOT NULL",
            (worker_id,)).fetchall())
        return [(str(r[0]), bytes(r[1])) for r in rows]

    # --- administration ---

    def purge(self, queues: Sequence[str]) -> int:
        def delete(conn: Any) -> int:
            ready = conn.execute(f"DELETE FROM {self.s}.messages WHERE queue = ANY(%s) AND owner IS NULL",
                                 (list(queues),)).rowcount
            delayed = conn.execute(f"DELETE FROM {self.s}.delayed WHERE queue = ANY(%s)", (list(queues),)).rowcount
            return int(ready) + int(delayed)

        return int(self.db.write(delete))

    def queue_sizes(self, queues: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        def count(conn: Any) -> dict[str, dict[str, int]]:
            sizes: dict[str, dict[str, int]] = {}
            for queue, ready, reserved in conn.execute(
                    f"SELECT queue, count(*) FILTER (WHERE owner IS NULL), count(*) FILTER (WHERE owner IS NOT NULL) "
                    f"FROM {self.s}.messages GROUP BY queue"):
                sizes.setdefault(queue, {"ready": 0, "reserved": 0, "delayed": 0})
                sizes[queue].update(ready=int(ready), reserved=int(reserved))
            for queue, delayed in conn.execute(f"SELECT queue, count(*) FROM {self.s}.delayed GROUP BY queue"):
                sizes.setdefault(queue, {"ready": 0, "reserved": 0, "delayed": 0})["delayed"] = int(delayed)
            return sizes

        sizes: dict[str, dict[str, int]] = self.db.read(count)
        if queues is not None:
            sizes = {q: sizes.get(q, {"ready": 0, "reserved": 0, "delayed": 0}) for q in queues}
        return sizes

    def oldest_waiting(self, queues: Sequence[str]) -> dict[str, float]:
        # Ids grow with each insert: each priority's first ready message (the ready index's
        # order) is its oldest; the oldest of those heads is the queue's.
        def heads(conn: Any) -> dict[str, list[bytes]]:
            rows = conn.execute(
                f"SELECT queue, payload FROM {self.s}.messages WHERE id IN (SELECT min(id) FROM {self.s}.messages "
                f"WHERE queue = ANY(%s) AND owner IS NULL GROUP BY queue, priority)", (list(queues),)).fetchall()
            found: dict[str, list[bytes]] = {q: [] for q in queues}
            for queue, payload in rows:
                found[queue].append(bytes(payload))
            return found

        return oldest_of(self.db.read(heads))

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = self.db.read(lambda c: c.execute(
            f"SELECT id, queue, payload, reason, at, deliveries FROM {self.s}.dead ORDER BY id DESC LIMIT %s",
            (limit,)).fetchall())
        return [DeadLetter(str(r[0]), r[1], bytes(r[2]), r[3], float(r[4]), int(r[5])) for r in rows]

    def requeue_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        def move(conn: Any) -> int:
            where, params = ("", ()) if ids is None else (" WHERE id = ANY(%s)", ([int(i) for i in ids],))
            rows = conn.execute(f"DELETE FROM {self.s}.dead{where} RETURNING id, queue, payload", params).fetchall()
            rows.sort(key=lambda r: r[0])
            if rows:
                with conn.cursor() as cur:
                    cur.executemany(f"INSERT INTO {self.s}.messages (queue, priority, payload) VALUES (%s, %s, %s)",
                                    [(r[1], priority_of(bytes(r[2])), r[2]) for r in rows])
            self.db.notify(conn, "q", sorted({r[1] for r in rows}))
            return len(rows)

        return int(self.db.write(move))

    # --- shared state ---

    def transaction(self) -> Any:
        return self.db.transaction()

    def schedule_store(self, name: str, publish: Publisher) -> ScheduleStore | None:
        return PostgresScheduleStore(self.db, name, publish)

    def event_channel(self) -> EventChannel | None:
        return PostgresEventChannel(self.db, int(self.options.get("events_max_len", 10000)))

    def housekeeping(self) -> None:
        # Every message leaves two dead row versions (its claim and its ack): at thousands of
        # tasks/s autovacuum, which looks at a table at most once a minute, lets the table grow
        # by hundreds of MB between its visits. Workers vacuum the two hot tables every few
        # seconds instead (one worker at a time), so they stay as small as their backlog.
        if time.monotonic() >= self._next_vacuum:
            self._next_vacuum = time.monotonic() + VACUUM_EVERY
            self.db.vacuum_soon([f"{self.s}.messages", f"{self.s}.delayed"])

    def take_over_connections(self) -> None:
        # The stuck thread's connection may be mid-query: this thread opens its own.
        pass

    def close(self) -> None:
        self.db.close_thread()
