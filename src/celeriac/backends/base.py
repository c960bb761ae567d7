"""The result store interface: task state and outcome, keyed by task id.

A stored result is the meta mapping Celery users know (`status`, `result`, `traceback`,
`date_done`, `children`, ...), serialized once by the worker. Stores write states
atomically and never let an in-flight state (STARTED, RETRY) overwrite a final one.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Sequence

from .. import protocol, states
from ..history import DEFAULT_EXPIRES, DEFAULT_MAX, SEARCH_WINDOW, HistoryQuery, SearchPage, TaskRecord, search_step
from ..brokers.base import EventChannel, Publisher, ScheduleStore, safe_url
from .celery_api import CeleryBackendAPI, as_id_list, group_key

__all__ = ["ChordPart", "FiredChord", "ResultStore", "StoredResult", "as_id_list", "group_key"]


@dataclass(slots=True)
class StoredResult:
    task_id: str
    status: str
    data: bytes  # the serialized meta
    expires_in: float | None
    history: TaskRecord | None = None  # written with the result, in the same store call


@dataclass(slots=True)
class ChordPart:
    """A chord header task that reached a final state."""

    group_id: str
    index: int
    size: int  # members in the header; 0: not known to this part (a lazy header), the store knows it
    task_id: str
    status: str
    data: bytes  # the serialized meta of its outcome
    body: dict[str, Any]  # the chord body signature (travels with the header message, not stored)
    root_id: str | None = None

    @property
    def failed(self) -> bool:
        return self.status != states.SUCCESS


@dataclass(slots=True)
class FiredChord:
    """A chord that is complete (or has a failed header) and whose body is now this worker's job."""

    part: ChordPart  # the part whose recording completed it
    metas: list[dict[str, Any]]  # every recorded header outcome, in header order


class ResultStore(CeleryBackendAPI, ABC):
    schemes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, url: str, *, serializer: str = "json", accept: Sequence[str] = ("json",),
                 expires: float | None = 86400.0, options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.serializer = serializer
        self.accept = protocol.accepted_types(accept)
        self.expires = expires
        self.options = dict(options or {})

    @property
    def safe_url(self) -> str:
        return safe_url(self.url)

    # --- encoding, shared by every store ---

    def encode(self, meta: dict[str, Any]) -> StoredResult:
        """Serialize a meta mapping; raises EncodeError if the result cannot be encoded."""
        _ctype, data = protocol.dumps(meta, self.serializer)
        return StoredResult(meta["task_id"], meta["status"], data, self.expires)

    def decode(self, data: bytes) -> dict[str, Any]:
        raw = bytes(data)
        ctype = protocol.JSON if raw[:1] in (b"{", b"[") else protocol.PICKLE
        meta: dict[str, Any] = protocol.loads(raw, ctype, self.accept | {protocol.JSON})
        return meta

    # --- the interface ---

    @abstractmethod
    def store(self, results: Sequence[StoredResult]) -> None:
        """Write many results in one round trip; final states win over in-flight ones."""

    @abstractmethod
    def get_many(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Decoded metas of the ids that have one (unknown ids are simply absent)."""

    def get(self, task_id: str) -> dict[str, Any] | None:
        return self.get_many([task_id]).get(task_id)

    def wait(self, task_id: str, timeout: float) -> dict[str, Any] | None:
        """Block until the task is ready or `timeout` passes; return the latest meta.

        The default polls with a growing interval; stores with a push mechanism override it.
        """
        deadline = time.monotonic() + timeout
        interval = 0.001
        while True:
            meta = self.get(task_id)
            if meta is not None and meta.get("status") in states.READY_STATES:
                return meta
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return meta
            time.sleep(min(interval, remaining))
            interval = min(interval * 2, 0.1)

    # --- chords: counted atomically by the store, never by a polling task ---

    def chord_parts_done(self, parts: Sequence[ChordPart]) -> list[FiredChord]:
        """Record finished header tasks; returns the chords whose body this caller must start.

        Members are counted by header index, so a header that runs twice (redelivered after a
        crash) counts once. A chord fires when its last member is recorded, or at its first
        failure; the store remembers which task fired it, and only that task (for example
        the same header re-run because its worker died before publishing the body) is told
        again. Everyone else is told nothing.
        """
        if not parts:
            return []
        return [FiredChord(part, [self.decode(data) for _index, data in sorted(items, key=lambda x: x[0])])
                for part, items in self._record_chord_parts(parts)]

    @abstractmethod
    def _record_chord_parts(self, parts: Sequence[ChordPart]) -> list[tuple[ChordPart, list[tuple[int, bytes]]]]:
        """Store the parts; for each chord that fires for this caller: (part, [(index, meta)]).

        The chord's size is the largest `size` any of its parts carried (a lazily sent header
        tells only its last part) plus the members added by `chord_extend`; a part that fires
        the chord gets that total as its `size`."""

    def chord_extend(self, group_id: str, count: int = 1) -> int:
        """Add `count` members to a chord that is running (Task.add_to_chord); returns how many
        have been added to it so far. The chord then waits for them too."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot add members to a running chord (Task.add_to_chord); "
            "the SQLite, Redis and memory result stores can")

    # --- revocations: durable, with a bounded lifetime, read incrementally by workers ---

    @abstractmethod
    def revoke(self, task_ids: Sequence[str], expires_in: float, signal: str | None = None) -> None:
        """Record revocations (signal: terminate running ones with it; None: only never start them)."""

    @abstractmethod
    def revoked_since(self, cursor: int) -> tuple[list[tuple[str, str | None]], int]:
        """Revocations recorded after `cursor` that have not expired, and the new cursor (0: all)."""

    # --- rate limits: one schedule of start times per key, reserved atomically ---

    @abstractmethod
    def reserve_rate_slot(self, key: str, interval: float) -> float:
        """Reserve the next start time for `key`, `interval` seconds after the previous one;
        returns how many seconds from now that is (0: start now). Reservations are kept
        (a GCRA schedule), so many waiting tasks each get their own slot, once."""

    # --- unique tasks: a key held by one task id until it finishes or the hold expires ---

    @abstractmethod
    def claim_unique(self, key: str, task_id: str, ttl: float) -> str:
        """Hold `key` for `task_id` for `ttl` seconds unless a live hold exists; atomically.
        Returns the holder's task id: `task_id` itself when the claim succeeded."""

    @abstractmethod
    def release_unique(self, held: Sequence[tuple[str, str]]) -> None:
        """Let go of each (key, task id) hold that task still has; a key held by another task
        (the hold expired and was claimed again) is left alone."""

    # --- remote control: a short-lived command log every worker reads, and reply lists ---

    @abstractmethod
    def control_send(self, command: dict[str, Any], expires_in: float) -> None:
        """Append a command for the workers (each decides from `destination` if it is for it)."""

    @abstractmethod
    def control_since(self, cursor: int) -> tuple[list[dict[str, Any]], int]:
        """Commands after `cursor` that have not expired, and the new cursor (-1: only the cursor)."""

    def follow_logs(self, control_cursor: int, revoke_cursor: int) -> tuple[
            tuple[list[dict[str, Any]], int], tuple[list[tuple[str, str | None]], int]]:
        """`control_since` and `revoked_since` together: what a pool slot reads before it starts a
        task (every `worker_revoke_sync_interval`). A store over the network answers both in one
        round trip."""
        return self.control_since(control_cursor), self.revoked_since(revoke_cursor)

    @abstractmethod
    def control_reply(self, reply_id: str, reply: dict[str, Any], expires_in: float) -> None:
        """Add one worker's reply to a command."""

    @abstractmethod
    def control_replies(self, reply_id: str) -> list[dict[str, Any]]:
        """The replies to a command so far."""

    # --- beat's state, for brokers that keep none (RabbitMQ) ---

    def schedule_store(self, name: str, publish: Publisher) -> ScheduleStore | None:
        """Beat's lease and last ticks when the broker cannot hold them; None where this
        store is not shared between processes (memory)."""
        return None

    def event_channel(self) -> EventChannel | None:
        """The event stream when the broker has none (RabbitMQ); None where this store is not
        shared between processes (memory)."""
        return None

    # --- who is alive, for brokers that keep no worker list of their own (RabbitMQ) ---

    @abstractmethod
    def worker_heartbeat(self, worker_id: str, ttl: float, info: dict[str, Any] | None) -> None:
        """Say this worker is alive for `ttl` seconds (info None: it is gone)."""

    @abstractmethod
    def live_workers(self) -> dict[str, dict[str, Any]]:
        """Workers whose last heartbeat has not expired, with their info."""

    @abstractmethod
    def forget(self, task_ids: Sequence[str]) -> None:
        """Delete these results. One id as a str is accepted too (Celery's `forget(task_id)`):
        implementations read `task_ids` through `as_id_list`."""

    @abstractmethod
    def cleanup(self) -> int:
        """Delete results past their expiry; returns how many."""

    def upgrade_legacy_layout(self) -> int:
        """Move results, chord counters and revocations an earlier version kept under other
        names into this version's (a worker's start; idempotent). Returns keys moved (optional)."""
        return 0

    def close(self) -> None:
        """Release connections (optional)."""

    # --- task history (celeriac.history): written by store(), read by the dashboard ---

    history_expires: float | None = DEFAULT_EXPIRES  # set from the app's task_history_* settings
    history_max: int | None = DEFAULT_MAX

    def task_history(self, query: HistoryQuery) -> list[TaskRecord]:
        """A page of task records, newest first (stores that keep no history: none)."""
        return []

    def search_history(self, query: HistoryQuery, scan: int = SEARCH_WINDOW) -> SearchPage:
        """One step of a search of the history (celeriac.history.search_step): the matches
        among the `scan` newest records below `query.until` that its other filters let
        through, and the `until` the next step goes on from (None: nothing older is left)."""
        return search_step(self.task_history, self._history_floor, query, scan)

    def _history_floor(self, query: HistoryQuery, scan: int) -> float | None:
        """When the scan-th newest record `query`'s filters (not its search) let through was
        updated; None when fewer are left. Stores with an index answer this without reading records."""
        edge = self.task_history(replace(query, search=None, limit=1, offset=scan - 1))
        return edge[0].updated if edge else None

    def task_record(self, task_id: str) -> TaskRecord | None:
        """One task's record, or None when the history does not hold it."""
        return None

    def task_counts(self) -> dict[tuple[str, str], int]:
        """How many times tasks of each (name, state) were recorded, since the store began."""
        return {}

    def trim_history(self) -> int:
        """Drop records past the retention (age and count); returns how many."""
        return 0
