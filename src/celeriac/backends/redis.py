"""Results in Redis: a hash per task (status + meta) with a TTL, written by one script per batch.

Waiting does not poll: a final meta is also pushed to a one-element 'done' list, and a
waiting client BLMOVEs that list onto itself - it blocks until the task finishes, gets
the meta in the same reply, and leaves it there for any other waiter.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any, Sequence

from .._redis import Keys, RedisEventChannel, RedisScheduleStore, Script, client_for, guarded, key_prefix, pipelined
from ..brokers.base import EventChannel, Publisher, ScheduleStore
from ..brokers.redis_scripts import (CHORD_PARTS, CONTROL_SEND, FETCH_RESULTS, RESERVE_RATE_SLOT, REVOKE, REVOKED_SINCE,
                                     STORE_RESULTS)
from ..exceptions import OperationalError
from ..history import HistoryBuffer, HistoryQuery, TaskRecord
from .base import ChordPart, ResultStore, StoredResult
from .redis_history import RedisHistory

_BLOCK_CHUNK = 10.0  # seconds per blocking call, well under the client's socket timeout


class RedisResultStore(ResultStore):
    schemes = ("redis", "rediss", "unix")

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.client = client_for(url, self.options)
        self.keys = Keys(key_prefix(self.options))
        self._store = Script(self.client, STORE_RESULTS)
        self._fetch = Script(self.client, FETCH_RESULTS)
        self._chord_parts = Script(self.client, CHORD_PARTS)
        self._revoke = Script(self.client, REVOKE)
        self._reserve_rate_slot = Script(self.client, RESERVE_RATE_SLOT)
        self._control_send = Script(self.client, CONTROL_SEND)
        self._revoked_since = Script(self.client, REVOKED_SINCE)
        self.history = RedisHistory(self.client, url, self.keys.prefix)
        self.history_buffer = HistoryBuffer(self.history.write)

    def store(self, results: Sequence[StoredResult]) -> None:
        if not results:
            return
        args: list[Any] = [self.keys.prefix]
        for r in results:
            args += [r.task_id, r.status, int(r.expires_in * 1000) if r.expires_in else 0, r.data]
        guarded(self.url, "store results", lambda: self._store(args))
        history = [r.history for r in results if r.history is not None]
        if history:
            self.history_buffer.add(history)

    def get_many(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not task_ids:
            return {}
        if len(task_ids) == 1:  # the common case (ready()/state): two plain commands, one round trip
            task_id = task_ids[0]
            done, meta = guarded(self.url, "read a result", functools.partial(
                pipelined, self.client, ("LINDEX", self.keys.done(task_id), 0),
                ("HGET", self.keys.result(task_id), "meta")))
            data = done or meta
            return {task_id: self.decode(data)} if data else {}
        out: dict[str, dict[str, Any]] = {}
        ids = list(task_ids)
        for start in range(0, len(ids), 1000):
            chunk = ids[start:start + 1000]
            found = guarded(self.url, "read results", functools.partial(self._fetch, [self.keys.prefix, *chunk]))
            out.update({t: self.decode(data) for t, data in zip(chunk, found, strict=True) if data})
        return out

    def wait(self, task_id: str, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        done = self.keys.done(task_id)
        backoff = 0.05
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0.001:
                try:
                    return self.get(task_id)
                except OperationalError:
                    return None
            block = min(remaining, _BLOCK_CHUNK)
            try:
                data = guarded(self.url, "wait for a result", functools.partial(
                    self.client.blmove, done, done, block, "RIGHT", "RIGHT"))
            except OperationalError:
                # Redis restarting: keep waiting, with backoff, until the caller's deadline.
                if deadline - time.monotonic() <= backoff:
                    raise
                time.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            if data is not None:
                return self.decode(data)
            backoff = 0.05

    def _record_chord_parts(self, parts: Sequence[ChordPart]) -> list[tuple[ChordPart, list[tuple[int, bytes]]]]:
        args: list[Any] = [self.keys.prefix, int(self.expires * 1000) if self.expires else 0]
        for part in parts:
            args += [part.group_id, part.index, part.size, part.task_id, 1 if part.failed else 0, part.data]
        reply = guarded(self.url, "record chord members", lambda: self._chord_parts(args))
        return [(parts[int(number) - 1], [(int(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)])
                for number, flat in reply]

    def schedule_store(self, name: str, publish: Publisher) -> ScheduleStore | None:
        return RedisScheduleStore(self.url, self.client, self.keys.prefix, name, publish)

    def event_channel(self) -> EventChannel | None:
        return RedisEventChannel(self.url, self.client, self.keys.prefix,
                                 int(self.options.get("events_max_len", 10000)))

    def worker_heartbeat(self, worker_id: str, ttl: float, info: dict[str, Any] | None) -> None:
        p = self.keys.prefix
        if info is None:
            commands: tuple[tuple[Any, ...], ...] = (("ZREM", f"{p}:beats", worker_id),
                                                    ("HDEL", f"{p}:beats:info", worker_id))
        else:
            until = int((time.time() + ttl) * 1000)
            commands = (("ZADD", f"{p}:beats", until, worker_id),
                        ("HSET", f"{p}:beats:info", worker_id, json.dumps(info)))
        guarded(self.url, "record a worker heartbeat", functools.partial(pipelined, self.client, *commands))

    def live_workers(self) -> dict[str, dict[str, Any]]:
        p = self.keys.prefix
        now = int(time.time() * 1000)
        ids = guarded(self.url, "list workers", functools.partial(self.client.zrangebyscore, f"{p}:beats", now, "+inf"))
        if not ids:
            return {}
        infos = guarded(self.url, "list workers", functools.partial(self.client.hmget, f"{p}:beats:info", ids))
        return {(i.decode() if isinstance(i, bytes) else str(i)): json.loads(info) for i, info in zip(ids, infos,
                                                                                                      strict=True)
                if info}

    def control_send(self, command: dict[str, Any], expires_in: float) -> None:
        now = int(time.time() * 1000)
        args = [self.keys.prefix, now, now + int(expires_in * 1000), json.dumps(command)]
        guarded(self.url, "send a control command", lambda: self._control_send(args))

    def control_since(self, cursor: int) -> tuple[list[dict[str, Any]], int]:
        p = self.keys.prefix
        if cursor < 0:
            last = guarded(self.url, "read the control log", lambda: self.client.get(f"{p}:control:seq"))
            return [], int(last or 0)
        members = guarded(self.url, "read the control log", lambda: self.client.zrangebyscore(
            f"{p}:control", f"({cursor}", "+inf"))
        found = []
        for raw in members:
            seq, _, text = (raw.decode() if isinstance(raw, bytes) else str(raw)).partition("|")
            found.append(json.loads(text))
            cursor = max(cursor, int(seq))
        return found, cursor

    def control_reply(self, reply_id: str, reply: dict[str, Any], expires_in: float) -> None:
        key = f"{self.keys.prefix}:reply:{reply_id}"
        guarded(self.url, "reply to a control command", functools.partial(
            pipelined, self.client, ("RPUSH", key, json.dumps(reply)), ("PEXPIRE", key, int(expires_in * 1000))))

    def control_replies(self, reply_id: str) -> list[dict[str, Any]]:
        key = f"{self.keys.prefix}:reply:{reply_id}"
        return [json.loads(r) for r in guarded(self.url, "read control replies",
                                                lambda: self.client.lrange(key, 0, -1))]

    def reserve_rate_slot(self, key: str, interval: float) -> float:
        args = [self.keys.prefix, key, int(interval * 1_000_000)]
        micros = guarded(self.url, "reserve a rate-limit slot", lambda: self._reserve_rate_slot(args))
        return max(0.0, int(micros) / 1_000_000)

    def revoke(self, task_ids: Sequence[str], expires_in: float, signal: str | None = None) -> None:
        now = int(time.time() * 1000)
        args = [self.keys.prefix, now, now + int(expires_in * 1000), signal or "", *task_ids]
        guarded(self.url, "record revocations", lambda: self._revoke(args))

    def revoked_since(self, cursor: int) -> tuple[list[tuple[str, str | None]], int]:
        args = [self.keys.prefix, int(time.time() * 1000), cursor]
        members = guarded(self.url, "read revocations", lambda: self._revoked_since(args))
        found: list[tuple[str, str | None]] = []
        for raw in members:
            seq, sig, task_id = (raw.decode() if isinstance(raw, bytes) else str(raw)).split("|", 2)
            found.append((task_id, sig or None))
            cursor = max(cursor, int(seq))
        return found, cursor

    def forget(self, task_ids: Sequence[str]) -> None:
        keys = [k for t in task_ids for k in (self.keys.result(t), self.keys.done(t))]
        if keys:
            guarded(self.url, "forget results", lambda: self.client.delete(*keys))

    def cleanup(self) -> int:
        self.trim_history()
        return 0  # Redis expires results by itself (PEXPIRE)

    def close(self) -> None:
        self.history_buffer.flush()  # a pool process that ends writes its last records now

    def task_history(self, query: HistoryQuery) -> list[TaskRecord]:
        self.history_buffer.flush()
        return self.history.query(query)

    def task_record(self, task_id: str) -> TaskRecord | None:
        self.history_buffer.flush()
        return self.history.one(task_id)

    def task_counts(self) -> dict[tuple[str, str], int]:
        self.history_buffer.flush()
        return self.history.counts()

    def trim_history(self) -> int:
        self.history_buffer.flush()
        return self.history.trim(self.history_expires, self.history_max)
