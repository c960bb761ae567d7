"""Waiting on PostgreSQL without polling: one listener per process.

A thread with its own connection LISTENs and wakes the waiters whose key was notified
("<kind>:<payload>", or "<kind>" for any payload). It LISTENs only on the kinds this process
waits for - a worker's pool process on its queues' channel, a client on the results' - so a
process is not woken by every message and every result of the whole system (each NOTIFY
reaches every listener of its channel). A kind first needed later (a task that waits on a
result) is added by a NOTIFY on the process's own channel, which makes the thread LISTEN on
it before the waiter looks. The thread always reads, so the server's notification queue is
never held back by it. Waiters still re-check at least every POLL_FALLBACK seconds, in case a
notification was lost while reconnecting.
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, TypeVar

import psycopg

if TYPE_CHECKING:
    from .database import PostgresDatabase

POLL_FALLBACK = 2.0  # seconds: a waiter re-checks at least this often, notification or not
_SUBSCRIBE_WAIT = 1.0  # seconds a waiter waits for its LISTEN (the first use in a process)

T = TypeVar("T")


class Waiter:
    """One waiting thread's wake-up: set when a notification for one of its keys comes."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = list(keys)
        self.event = threading.Event()
        self.value: bytes | None = None  # a result that came inside its notification
        self.notified_at = 0.0  # monotonic: when the newest notification for it arrived


def _decoded(text: str | None) -> bytes | None:
    if not text:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return None  # not a result after all: the waiter reads the table


class Wakeups:
    """The process's listener (module docs). Kinds: "q" messages (payload: queue), "r"
    results (task ids, maybe with the result), "e" events."""

    def __init__(self, db: "PostgresDatabase") -> None:
        self.db = db
        self.lock = threading.Lock()
        self.waiters: dict[str, set[Waiter]] = defaultdict(set)
        self.changes = threading.Condition()
        self.kinds: set[str] = set()  # wanted
        self.listening: frozenset[str] = frozenset()  # LISTENed on the thread's connection now
        # For quiet_since (under self.lock): since when the connection LISTENs on a kind, and
        # when each queue's newest notification arrived (waited for or not; queues only: few).
        self.listened_since: dict[str, float] = {}
        self.heard: dict[str, float] = {}
        self.connected_before = False  # only the first connection is waited for (a restart is polled through)
        self.own = db.channel(f"w{os.getpid()}")  # pokes: "LISTEN on what was added"
        self.thread = threading.Thread(target=self._run, name="celeriac-pg-listen", daemon=True)
        self.thread.start()

    @contextlib.contextmanager
    def watching(self, keys: Sequence[str]) -> Iterator[Waiter]:
        """Register before checking the condition: a notification after that is not missed."""
        waiter = Waiter(keys)
        with self.lock:
            for key in waiter.keys:
                self.waiters[key].add(waiter)
        self._listen_for({key.partition(":")[0] for key in waiter.keys})
        try:
            yield waiter
        finally:
            with self.lock:
                for key in waiter.keys:
                    group = self.waiters.get(key)
                    if group is not None:
                        group.discard(waiter)
                        if not group:
                            del self.waiters[key]

    def _listen_for(self, kinds: set[str]) -> None:
        """Until the thread LISTENs on `kinds` (bounded: if it cannot, the waiter polls)."""
        with self.changes:
            if kinds <= self.listening:
                return
            added = not kinds <= self.kinds
            self.kinds |= kinds
            connected = self.own in self.listening
            if self.connected_before and not connected:
                return  # reconnecting: it LISTENs on these then, and wakes every waiter
        if added and connected:
            self._poke()  # the thread is in its wait: wake it to LISTEN (else it does at connect)
        with self.changes:
            self.changes.wait_for(lambda: kinds <= self.listening, timeout=_SUBSCRIBE_WAIT)

    def _poke(self) -> None:
        with contextlib.suppress(Exception):  # no connection now: the thread LISTENs when it has one
            self.db.fast_conn().execute("SELECT pg_notify(%s, '')", (self.own,))

    def quiet_since(self, keys: Sequence[str], moment: float) -> bool:
        """Has this process listened on `keys` (queue keys, "q:<name>") all along since `moment`
        (monotonic) and heard nothing for them? Then whatever was committed after `moment`
        is still to be notified here."""
        with self.lock:
            for key in keys:
                kind = key.partition(":")[0]
                since = self.listened_since.get(kind)
                if since is None or since >= moment:
                    return False
                if self.heard.get(key, -math.inf) >= moment or self.heard.get(kind, -math.inf) >= moment:
                    return False
        return True

    def _wake(self, keys: Sequence[str], values: dict[str, str] | None = None) -> None:
        """`values`: key -> a result in base64, decoded only for a key someone here waits on."""
        with self.lock:
            if keys and keys[0] == "q":  # a queue's notification: remembered for quiet_since
                heard = time.monotonic()
                for key in keys:
                    self.heard[key] = heard
            for key in keys:
                waiting = self.waiters.get(key)
                if not waiting:
                    continue
                value = _decoded(values.get(key)) if values else None
                now = time.monotonic()
                for waiter in waiting:
                    if value is not None:
                        waiter.value = value
                    waiter.notified_at = now
                    waiter.event.set()

    def _wake_results(self, payload: str) -> None:
        """Task ids, each maybe followed by "=<base64>": the final result itself."""
        keys, values, previous = ["r"], {}, ""
        for token in payload.split(" "):
            if token.startswith("="):
                if previous:
                    values[previous] = token[1:]
                previous = ""  # one value per id
            elif token:
                previous = f"r:{token}"
                keys.append(previous)
        self._wake(keys, values)

    def _wake_all(self) -> None:
        now = time.monotonic()  # what was missed meanwhile was committed before this
        with self.lock:
            for group in self.waiters.values():
                for waiter in group:
                    waiter.notified_at = now
                    waiter.event.set()

    def _subscribe(self, conn: "psycopg.Connection[Any]", listening: set[str]) -> None:
        """LISTEN on what is wanted and not yet listened to; tell the waiters."""
        with self.changes:
            wanted = set(self.kinds)
        for kind in sorted(wanted - listening):
            conn.execute(f"LISTEN {self.db.channel(kind)}")
            listening.add(kind)
            with self.lock:
                self.listened_since[kind] = time.monotonic()
        with self.changes:
            self.listening = frozenset(listening | {self.own})
            self.connected_before = True
            self.changes.notify_all()

    def _dispatch(self, note: Any, prefix: str) -> None:
        kind = note.channel[len(prefix):]
        if kind == "r":
            self._wake_results(note.payload)
        else:
            self._wake([kind, f"{kind}:{note.payload}"] if note.payload else [kind])

    def _run(self) -> None:
        backoff = 0.1
        prefix = self.db.schema + "_"
        while True:
            try:
                conn = psycopg.connect(self.db.conninfo, autocommit=True, connect_timeout=10)
            except psycopg.Error:
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            listening: set[str] = set()
            try:
                conn.execute(f"LISTEN {self.own}")
                self._subscribe(conn, listening)
                backoff = 0.1
                self._wake_all()  # whatever was notified while we were not listening
                while True:
                    # One packet of notifications at a time (none is dropped: a packet is
                    # yielded whole), then whatever kinds were added meanwhile.
                    for note in conn.notifies(stop_after=1):
                        if note.channel != self.own:
                            self._dispatch(note, prefix)
                    self._subscribe(conn, listening)
            except psycopg.Error:
                with self.changes:
                    self.listening = frozenset()
                with self.lock:
                    self.listened_since.clear()  # what is notified now is lost until the next LISTEN
                self._wake_all()
                time.sleep(backoff)
            finally:
                with contextlib.suppress(Exception):
                    conn.close()


def wait_for(db: "PostgresDatabase", keys: Sequence[str], check: Callable[[], T | None], timeout: float,
             next_due: Callable[[], float | None] | None = None,
             delivered: Callable[[bytes], T | None] | None = None,
             notified: Callable[[float], T | None] | None = None,
             first_look: Callable[[], bool] | None = None) -> T | None:
    """Run `check` until it returns something (not None), waking on notifications for `keys`,
    at most every POLL_FALLBACK seconds, and when `next_due` (seconds) says a delay ends.
    `delivered`: what a value that came inside a notification gives, instead of a `check`;
    `notified`: what runs instead of `check` after a wake by notifications only, given the
    monotonic time the newest of them arrived; `first_look`: whether to `check` before the
    first wait (asked once the waiter is registered, so nothing notified after is missed)."""
    deadline = time.monotonic() + timeout
    with db.wakeups().watching(keys) as waiter:
        first, woken = True, False  # woken: the last wait was ended by a notification
        while True:
            waiter.event.clear()
            # Read after the clear: a notification that came before it counts here, one after
            # it sets the event again. Nothing is skipped on a time read before the clear.
            notified_at = waiter.notified_at
            value, waiter.value = waiter.value, None
            found = delivered(value) if value is not None and delivered is not None else None
            if found is None and not (first and first_look is not None and not first_look()):
                found = notified(notified_at) if woken and notified is not None else check()
            first = False
            if found is not None:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            pause = min(remaining, POLL_FALLBACK)
            if next_due is not None:
                due = next_due()
                if due is not None:
                    pause = min(pause, due + 0.0005)
            woken = waiter.event.wait(pause)
