"""Task history in Redis: two hashes (task id -> record, task id -> result meta) and sorted
sets by time (all records, per state, per name), plus a hash of counters per (name, state).

Records are collected by the worker process (celeriac.history.HistoryBuffer) and written
200 at a time with a handful of commands in one round trip (a ZADD or HSET carries the
whole batch), so the server's work per task is small. `trim` (run by the workers' clean-up)
removes records past the retention age and beyond the count limit. Filtering by worker
scans the newest records.
"""

from __future__ import annotations

import json
import operator
import time
from collections import defaultdict
from typing import Any, Sequence

from ... import protocol, states
from .client import guarded, pipelined
from .keys import Keys
from ...history import COLUMNS, SEARCH_WINDOW, HistoryQuery, TaskRecord

_SCAN_CHUNK = 500
_WRITE_CHUNK = 200  # records per round trip of a history write
_SCAN_MOST = max(20_000, SEARCH_WINDOW)  # candidates a filtered or searched page looks at, newest first

_ROW = tuple(c for c in COLUMNS if c != "meta")
_ROW_OF = operator.attrgetter(*_ROW)  # a record's row (a tuple, encoded as a JSON list), in one C call


class RedisHistory:
    """The history's reads, writes and trimming, for RedisResultStore."""

    def __init__(self, client: Any, url: str, keys: Keys) -> None:
        self.client, self.url, self.keys = client, url, keys
        self.rows, self.metas = keys.history_rows, keys.history_meta
        self.main, self.counts_key = keys.history, keys.history_counts

    def write(self, records: list[TaskRecord]) -> None:
        guarded(self.url, "write the task history", lambda: self._write(records))

    def _write(self, records: list[TaskRecord]) -> None:
        records = self._without_late_states(records)
        # A round trip per _WRITE_CHUNK records: one command of thousands of members would hold
        # Redis (single-threaded) for milliseconds, and building them all would hold this
        # process's GIL as long - both stall the tasks' own fetches and result writes (measured:
        # a worker's p99 round trip 2.3 ms with one write per flush, 0.9 ms without history).
        for start in range(0, len(records), _WRITE_CHUNK):
            self._write_chunk(records[start:start + _WRITE_CHUNK])

    def _write_chunk(self, records: list[TaskRecord]) -> None:
        rows: list[Any] = []
        metas: list[Any] = []
        scores: list[Any] = []
        by_state: dict[str, list[Any]] = defaultdict(list)
        by_name: dict[str, list[Any]] = defaultdict(list)
        counts: dict[str, int] = defaultdict(int)
        encode, row_of = protocol._json_text, _ROW_OF  # the shared C encoder: JSON as json.dumps writes it
        for r in records:
            rows += [r.task_id, encode(row_of(r))]
            metas += [r.task_id, r.meta]
            scores += [r.updated, r.task_id]
            by_state[r.state] += [r.updated, r.task_id]
            if r.name:
                by_name[r.name] += [r.updated, r.task_id]
            counts[f"{r.name or ''}\0{r.state}"] += 1
        commands: list[tuple[Any, ...]] = [("HSET", self.rows, *rows), ("HSET", self.metas, *metas),
                                           ("ZADD", self.main, *scores)]
        commands += [("ZADD", self.keys.history_state(state), *pairs) for state, pairs in by_state.items()]
        commands += [("ZADD", self.keys.history_name(name), *pairs) for name, pairs in by_name.items()]
        finished = [r.task_id for r in records if r.state in states.READY_STATES]
        if finished:  # no longer in flight
            commands.append(("ZREM", self.keys.history_state(states.RETRY), *finished))
        commands += [("HINCRBY", self.counts_key, key, n) for key, n in counts.items()]
        pipelined(self.client, *commands)

    def _without_late_states(self, records: list[TaskRecord]) -> list[TaskRecord]:
        """A final state is never replaced by an in-flight one (asked only when a batch has one)."""
        late = [r.task_id for r in records if r.state not in states.READY_STATES]
        if not late:
            return records
        known = self.client.hmget(self.rows, late)
        final = {task_id for task_id, row in zip(late, known, strict=True)
                 if row is not None and json.loads(row)[_ROW.index("state")] in states.READY_STATES}
        kept = []
        for r in records:  # in order: a final state earlier in this batch counts too
            if r.state in states.READY_STATES:
                final.add(r.task_id)
            elif r.task_id in final:
                continue
            kept.append(r)
        return kept

    def _index(self, q: HistoryQuery) -> str:
        wanted = q.wanted_states()
        if len(wanted) == 1:
            return self.keys.history_state(wanted[0])
        if q.name:
            return self.keys.history_name(q.name)
        return self.keys.history

    def _load(self, ids: Sequence[str]) -> list[TaskRecord]:
        return self._with_metas(self._rows(ids))

    def _rows(self, ids: Sequence[str], search: str | None = None) -> list[TaskRecord]:
        """The records of `ids` that exist, without their result meta. With `search`, a row
        whose stored text does not hold the search text (as the row's JSON writes it: the
        encoder escapes character by character) cannot match and is not decoded."""
        rows = self.client.hmget(self.rows, list(ids)) if ids else []
        needle = protocol._json_text(search)[1:-1].encode("utf-8") if search else None
        out = []
        for row in rows:
            if row is None:  # trimmed while its index entry waits for the next trim
                continue
            if needle is not None and needle not in (row if isinstance(row, bytes) else row.encode("utf-8")):
                continue
            out.append(TaskRecord(**dict(zip(_ROW, json.loads(row), strict=True))))
        return out

    def _with_metas(self, records: list[TaskRecord]) -> list[TaskRecord]:
        """The result metas of these records, read in one go (only for those a page shows)."""
        if records:
            metas = self.client.hmget(self.metas, [r.task_id for r in records])
            for record, meta in zip(records, metas, strict=True):
                record.meta = bytes(meta or b"")
        return records

    def query(self, q: HistoryQuery) -> list[TaskRecord]:
        def read() -> list[TaskRecord]:
            key = self._index(q)
            top = f"({q.until}" if q.until is not None else "+inf"
            bottom = repr(q.since) if q.since is not None else "-inf"
            found: list[TaskRecord] = []
            skip, start = q.offset, 0
            while len(found) < q.limit and start < _SCAN_MOST:
                ids = [_text(i) for i in self.client.zrevrangebyscore(key, top, bottom, start=start, num=_SCAN_CHUNK)]
                if not ids:
                    break
                start += len(ids)
                for record in self._rows(ids, q.search):
                    if not q.matches(record):
                        continue
                    if skip:
                        skip -= 1
                        continue
                    found.append(record)
                    if len(found) == q.limit:
                        break
            return self._with_metas(found)

        return guarded(self.url, "read the task history", read)

    def floor(self, q: HistoryQuery, scan: int) -> float | None:
        """The score of the scan-th entry, newest first, of the index q reads (below q.until):
        a search step walks at most that many candidates."""
        top = f"({q.until}" if q.until is not None else "+inf"
        bottom = repr(q.since) if q.since is not None else "-inf"
        edge = guarded(self.url, "read the task history", lambda: self.client.zrevrangebyscore(
            self._index(q), top, bottom, start=scan - 1, num=1, withscores=True))
        return float(edge[0][1]) if edge else None

    def one(self, task_id: str) -> TaskRecord | None:
        found = guarded(self.url, "read a task's history", lambda: self._load([task_id]))
        return found[0] if found else None

    def counts(self) -> dict[tuple[str, str], int]:
        raw = guarded(self.url, "read task counts", lambda: self.client.hgetall(self.counts_key))
        out: dict[tuple[str, str], int] = {}
        for field, n in raw.items():
            name, _, state = _text(field).partition("\0")
            out[(name, state)] = int(n)
        return out

    def trim(self, max_age: float | None, max_tasks: int | None) -> int:
        def run() -> int:
            main = self.main
            cutoff = time.time() - max_age if max_age else float("-inf")
            if max_tasks:
                total = int(self.client.zcard(main))
                if total > max_tasks:
                    edge = self.client.zrange(main, total - max_tasks - 1, total - max_tasks - 1, withscores=True)
                    if edge:
                        cutoff = max(cutoff, float(edge[0][1]))
            if cutoff == float("-inf"):
                return 0
            gone = 0
            while True:
                ids = self.client.zrangebyscore(main, "-inf", cutoff, start=0, num=_SCAN_CHUNK)
                if not ids:
                    break
                pipelined(self.client, ("HDEL", self.rows, *ids), ("HDEL", self.metas, *ids), ("ZREM", main, *ids))
                gone += len(ids)
            for kind in ("state", "name"):  # the per-state and per-name indexes
                for index in self.client.scan_iter(match=f"{self.keys.history}:{kind}:*", count=1000):
                    self.client.zremrangebyscore(index, "-inf", cutoff)
            return gone

        return guarded(self.url, "trim the task history", run)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
