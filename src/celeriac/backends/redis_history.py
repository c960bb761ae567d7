"""Task history in Redis: a hash per task plus sorted sets by time (all, per state, per name).

Records are written by one script sent in the same pipeline as the results script, so a
batch of outcomes still costs one round trip. Records expire on their own (PEXPIRE at the
retention age); `trim` also removes the oldest beyond the count limit and cleans the sorted
sets. Filtering by worker scans the newest records.
"""

from __future__ import annotations

import json
import time
from typing import Any, Sequence

import redis

from .._redis import Script, guarded, pipelined
from ..history import COLUMNS, HistoryQuery, TaskRecord

# ARGV: prefix, ttl ms (0: none), then per record: id, state, name, updated, row JSON, meta
WRITE_HISTORY = """
local p = ARGV[1]
local ttl = tonumber(ARGV[2])
local final = {SUCCESS = true, FAILURE = true, REVOKED = true}
for i = 3, #ARGV, 6 do
  local id, state, name, updated, row, meta = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local key = p .. ':h:' .. id
  local old = redis.call('HGET', key, 'state')
  if not (old and final[old] and not final[state]) then
    redis.call('HSET', key, 'state', state, 'row', row, 'meta', meta)
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
    redis.call('ZADD', p .. ':history', updated, id)
    if old and old ~= state then redis.call('ZREM', p .. ':history:state:' .. old, id) end
    redis.call('ZADD', p .. ':history:state:' .. state, updated, id)
    if name ~= '' then redis.call('ZADD', p .. ':history:name:' .. name, updated, id) end
    redis.call('HINCRBY', p .. ':history:counts', name .. '\\0' .. state, 1)
  end
end
return 1
"""

_SCAN_CHUNK = 500
_SCAN_MOST = 20_000  # candidates a filtered or searched page looks at, newest first


def write_args(prefix: str, ttl: float | None, records: Sequence[TaskRecord]) -> list[Any]:
    args: list[Any] = [prefix, int(ttl * 1000) if ttl else 0]
    for r in records:
        row = json.dumps({c: getattr(r, c) for c in COLUMNS if c != "meta"})
        args += [r.task_id, r.state, r.name or "", repr(r.updated), row, r.meta]
    return args


def run_together(client: Any, scripts: Sequence[tuple[Script, list[Any]]]) -> None:
    """Several scripts in one round trip; a server that lost its script cache is given them again."""
    commands = [("EVALSHA", script.sha, 0, *args) for script, args in scripts]
    try:
        pipelined(client, *commands)
    except redis.exceptions.NoScriptError:
        pipelined(client, *[("SCRIPT", "LOAD", script.source) for script, _ in scripts])
        pipelined(client, *commands)


class RedisHistory:
    """The read side (and trimming) of the history, for RedisResultStore."""

    def __init__(self, client: Any, url: str, prefix: str) -> None:
        self.client, self.url, self.p = client, url, prefix
        self.script = Script(client, WRITE_HISTORY)

    def _index(self, q: HistoryQuery) -> str:
        wanted = q.wanted_states()
        if len(wanted) == 1:
            return f"{self.p}:history:state:{wanted[0]}"
        if q.name:
            return f"{self.p}:history:name:{q.name}"
        return f"{self.p}:history"

    def _load(self, ids: Sequence[str]) -> list[TaskRecord]:
        if not ids:
            return []
        rows = pipelined(self.client, *[("HMGET", f"{self.p}:h:{i}", "row", "meta") for i in ids])
        out = []
        for row, meta in rows:
            if row is None:  # expired while its index entry waits for the next trim
                continue
            out.append(TaskRecord(**json.loads(row), meta=bytes(meta or b"")))
        return out

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
                for record in self._load(ids):
                    if not q.matches(record):
                        continue
                    if skip:
                        skip -= 1
                        continue
                    found.append(record)
                    if len(found) == q.limit:
                        break
            return found

        return guarded(self.url, "read the task history", read)

    def one(self, task_id: str) -> TaskRecord | None:
        found = guarded(self.url, "read a task's history", lambda: self._load([task_id]))
        return found[0] if found else None

    def counts(self) -> dict[tuple[str, str], int]:
        raw = guarded(self.url, "read task counts", lambda: self.client.hgetall(f"{self.p}:history:counts"))
        out: dict[tuple[str, str], int] = {}
        for field, n in raw.items():
            name, _, state = _text(field).partition("\0")
            out[(name, state)] = int(n)
        return out

    def trim(self, max_age: float | None, max_tasks: int | None) -> int:
        def run() -> int:
            main = f"{self.p}:history"
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
                pipelined(self.client, ("DEL", *[f"{self.p}:h:{_text(i)}" for i in ids]), ("ZREM", main, *ids))
                gone += len(ids)
            for kind in ("state", "name"):  # the per-state and per-name indexes
                for index in self.client.scan_iter(match=f"{self.p}:history:{kind}:*", count=1000):
                    self.client.zremrangebyscore(index, "-inf", cutoff)
            return gone

        return guarded(self.url, "trim the task history", run)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
