"""In-process result store for unit tests (`memory://`)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Sequence

from ... import states
from ...history import HistoryQuery, TaskRecord
from ...backends.base import ChordPart, ResultStore, StoredResult, as_id_list

_STORES: dict[str, tuple[threading.Condition, dict[str, tuple[str, bytes, float | None]]]] = {}
# name -> group id -> (parts by index, task id that fired it)
_CHORDS: dict[str, dict[str, tuple[dict[int, bytes], list[str | None]]]] = {}
_CHORD_SIZES: dict[str, dict[str, list[int]]] = {}  # group id -> [header size, added members]
# name -> [(seq, task id, signal, expires)]
_REVOKED: dict[str, list[tuple[int, str, str | None, float]]] = {}
_RATE: dict[str, dict[str, float]] = {}  # name -> key -> next free start time
_UNIQUE: dict[str, dict[str, tuple[str, float]]] = {}  # store -> key -> (task id, held until)
_CONTROL: dict[str, tuple[list[tuple[int, bytes, float]], dict[str, list[bytes]]]] = {}
_BEATS: dict[str, dict[str, tuple[float, dict[str, Any]]]] = {}
# name -> (task id -> its history record, (name, state) -> how many times recorded)
_HISTORY: dict[str, tuple[dict[str, TaskRecord], dict[tuple[str, str], int]]] = {}
_LOCK = threading.Lock()


class MemoryResultStore(ResultStore):
    schemes = ("memory",)

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        name = url.split("://", 1)[1] if "://" in url else ""
        with _LOCK:
            self._cond, self._data = _STORES.setdefault(name, (threading.Condition(), {}))
            self._chords = _CHORDS.setdefault(name, {})
            self._chord_sizes = _CHORD_SIZES.setdefault(name, {})
            self._revoked = _REVOKED.setdefault(name, [])
            self._rate = _RATE.setdefault(name, {})
            self._unique = _UNIQUE.setdefault(name, {})
            self._commands, self._replies = _CONTROL.setdefault(name, ([], {}))
            self._beats = _BEATS.setdefault(name, {})
            self._history, self._counts = _HISTORY.setdefault(name, ({}, {}))

    def store(self, results: Sequence[StoredResult]) -> None:
        now = time.time()
        with self._cond:
            for r in results:
                old = self._data.get(r.task_id)
                if old and old[0] in states.READY_STATES and r.status not in states.READY_STATES:
                    continue
                self._data[r.task_id] = (r.status, r.data, None if r.expires_in is None else now + r.expires_in)
                if r.history is not None:
                    self._record(r.history)
            self._cond.notify_all()

    def _record(self, record: TaskRecord) -> None:
        old = self._history.pop(record.task_id, None)
        if old is not None and old.state in states.READY_STATES and record.state not in states.READY_STATES:
            self._history[record.task_id] = old
            return
        self._history[record.task_id] = record  # re-inserted: the dict keeps the history's order
        key = (record.name or "", record.state)
        self._counts[key] = self._counts.get(key, 0) + 1

    def task_history(self, query: HistoryQuery) -> list[TaskRecord]:
        with self._cond:
            newest_first = list(reversed(self._history.values()))
        found = [r for r in newest_first if query.matches(r)]
        return found[query.offset:query.offset + query.limit]

    def task_record(self, task_id: str) -> TaskRecord | None:
        with self._cond:
            return self._history.get(task_id)

    def task_counts(self) -> dict[tuple[str, str], int]:
        with self._cond:
            return dict(self._counts)

    def trim_history(self) -> int:
        cutoff = time.time() - self.history_expires if self.history_expires else None
        with self._cond:
            doomed = [t for t, r in self._history.items() if cutoff is not None and r.updated < cutoff]
            extra = len(self._history) - len(doomed) - (self.history_max or len(self._history))
            if extra > 0:
                doomed += [t for t in self._history if t not in set(doomed)][:extra]
            for task_id in doomed:
                del self._history[task_id]
            return len(doomed)

    def get_many(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        now = time.time()
        with self._cond:
            found = {t: v for t in task_ids if (v := self._data.get(t)) and (v[2] is None or v[2] >= now)}
        return {t: self.decode(v[1]) for t, v in found.items()}

    def wait(self, task_id: str, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                entry = self._data.get(task_id)
                remaining = deadline - time.monotonic()
                if (entry and entry[0] in states.READY_STATES) or remaining <= 0:
                    break
                self._cond.wait(remaining)
        return self.get(task_id)

    def _record_chord_parts(self, parts: Sequence[ChordPart]) -> list[tuple[ChordPart, list[tuple[int, bytes]]]]:
        fired = []
        with self._cond:
            for part in parts:
                members, fired_by = self._chords.setdefault(part.group_id, ({}, [None]))
                members[part.index] = part.data
                size = self._chord_sizes.setdefault(part.group_id, [0, 0])  # [header size, added]
                size[0] = max(size[0], part.size)
                if fired_by[0] is None and (part.failed or (size[0] and len(members) >= sum(size))):
                    fired_by[0] = part.task_id
                if fired_by[0] == part.task_id:
                    part.size = sum(size)
                    fired.append((part, sorted(members.items())))
        return fired

    def chord_extend(self, group_id: str, count: int = 1) -> int:
        with self._cond:
            size = self._chord_sizes.setdefault(group_id, [0, 0])
            size[1] += count
            return size[1]

    def worker_heartbeat(self, worker_id: str, ttl: float, info: dict[str, Any] | None) -> None:
        with self._cond:
            if info is None:
                self._beats.pop(worker_id, None)
            else:
                self._beats[worker_id] = (time.time() + ttl, dict(info))

    def live_workers(self) -> dict[str, dict[str, Any]]:
        now = time.time()
        with self._cond:
            return {w: info for w, (until, info) in self._beats.items() if until >= now}

    def control_send(self, command: dict[str, Any], expires_in: float) -> None:
        with self._cond:
            seq = self._commands[-1][0] + 1 if self._commands else 1
            self._commands.append((seq, json.dumps(command).encode(), time.time() + expires_in))

    def control_since(self, cursor: int) -> tuple[list[dict[str, Any]], int]:
        now = time.time()
        with self._cond:
            self._commands[:] = [c for c in self._commands if c[2] >= now]
            last = self._commands[-1][0] if self._commands else 0
            found = [json.loads(data) for seq, data, _ in self._commands if seq > cursor] if cursor >= 0 else []
        return found, max(cursor, last)

    def control_reply(self, reply_id: str, reply: dict[str, Any], expires_in: float) -> None:
        with self._cond:
            self._replies.setdefault(reply_id, []).append(json.dumps(reply).encode())

    def control_replies(self, reply_id: str) -> list[dict[str, Any]]:
        with self._cond:
            return [json.loads(r) for r in self._replies.get(reply_id, [])]

    def reserve_rate_slot(self, key: str, interval: float) -> float:
        now = time.time()
        with self._cond:
            start = max(now, self._rate.get(key, 0.0))
            self._rate[key] = start + interval
        return start - now

    def claim_unique(self, key: str, task_id: str, ttl: float) -> str:
        now = time.time()
        with self._cond:
            holder = self._unique.get(key)
            if holder is not None and holder[1] > now:
                return holder[0]
            self._unique[key] = (task_id, now + ttl)
            return task_id

    def release_unique(self, held: Sequence[tuple[str, str]]) -> None:
        with self._cond:
            for key, task_id in held:
                if self._unique.get(key, ("", 0.0))[0] == task_id:
                    del self._unique[key]

    def revoke(self, task_ids: Sequence[str], expires_in: float, signal: str | None = None) -> None:
        with self._cond:
            seq = self._revoked[-1][0] if self._revoked else 0
            now = time.time()
            for offset, task_id in enumerate(task_ids, 1):
                self._revoked.append((seq + offset, task_id, signal, now + expires_in))

    def revoked_since(self, cursor: int) -> tuple[list[tuple[str, str | None]], int]:
        now = time.time()
        with self._cond:
            self._revoked[:] = [r for r in self._revoked if r[3] >= now]
            found = [(task_id, signal) for seq, task_id, signal, _ in self._revoked if seq > cursor]
            last = self._revoked[-1][0] if self._revoked else cursor
        return found, max(cursor, last)

    def forget(self, task_ids: Sequence[str]) -> None:
        with self._cond:
            for t in as_id_list(task_ids):
                self._data.pop(t, None)

    def cleanup(self) -> int:
        now = time.time()
        with self._cond:
            dead = [t for t, v in self._data.items() if v[2] is not None and v[2] < now]
            for t in dead:
                del self._data[t]
        self.trim_history()
        return len(dead)
