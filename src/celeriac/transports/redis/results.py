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

from redis.exceptions import NoScriptError

from .client import (RedisEventChannel, RedisScheduleStore, Script, client_for, guarded, key_prefix,
                      pipelined)
from .keys import Keys, celery_chord_size, celery_task_meta
from .topology import is_cluster, is_cluster_url, slot_groups
from ...brokers.base import EventChannel, Publisher, ScheduleStore
from .scripts import (CHORD_EXTEND, CHORD_PARTS, CLAIM_UNIQUE, CONTROL_SEND, FETCH_RESULTS,
                                     RELEASE_UNIQUE, RESERVE_RATE_SLOT, REVOKE, REVOKED_SINCE, STORE_RESULTS)
from ... import states
from ...exceptions import OperationalError
from ...history import HistoryBuffer, HistoryQuery, TaskRecord
from ...backends.base import ChordPart, ResultStore, StoredResult, as_id_list
from .history import RedisHistory

_BLOCK_CHUNK = 10.0  # seconds per blocking call, well under the client's socket timeout




def celery_result_prefix(options: dict[str, Any]) -> str:
    """What Celery's Redis backend puts before its keys: `global_keyprefix`, with a '_' added
    unless it ends in one of ':_-.' (nothing by default)."""
    prefix = str(options.get("global_keyprefix") or options.get("key_prefix") or "")
    return prefix + "_" if prefix and prefix[-1] not in ":_-." else prefix


class RedisResultStore(ResultStore):
    schemes = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster", "sentinel")

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        if is_cluster_url(url):  # no Celery process can use a Redis Cluster (kombu and Celery have no client for it)
            self.options["celery_results"] = False
        self.client = client_for(url, self.options)
        self.cluster = is_cluster(self.client)
        self.keys = Keys(key_prefix(self.options))
        self._store = Script(self.client, STORE_RESULTS)
        self._fetch = Script(self.client, FETCH_RESULTS, writes=False)
        self._chord_parts = Script(self.client, CHORD_PARTS)
        self._chord_extend = Script(self.client, CHORD_EXTEND)
        self._revoke = Script(self.client, REVOKE)
        self._reserve_rate_slot = Script(self.client, RESERVE_RATE_SLOT)
        self._claim_unique = Script(self.client, CLAIM_UNIQUE)
        self._release_unique = Script(self.client, RELEASE_UNIQUE)
        self._control_send = Script(self.client, CONTROL_SEND)
        self._revoked_since = Script(self.client, REVOKED_SINCE)
        # Also Celery's result keys (celery-task-meta-<id>), while Celery processes share the server.
        self.celery = bool(self.options.get("celery_results"))
        self.celery_prefix = celery_result_prefix(self.options)
        self.history = RedisHistory(self.client, url, self.keys)
        self.history_buffer = HistoryBuffer(self.history.write)

    def store(self, results: Sequence[StoredResult]) -> None:
        if not results:
            return
        for group in slot_groups(self.client, results, lambda r: self.keys.result(r.task_id)):
            args: list[Any] = ["1" if self.celery else ""]
            keys: list[str] = []
            for r in group:
                args += [r.status, int(r.expires_in * 1000) if r.expires_in else 0, r.data]
                keys += [self.keys.result(r.task_id), self.keys.done(r.task_id)]
                if self.celery:
                    keys.append(self.celery_key(r.task_id))
            guarded(self.url, "store results", functools.partial(self._store, args, keys))
        history = [r.history for r in results if r.history is not None]
        if history:
            self.history_buffer.add(history)

    def get_many(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not task_ids:
            return {}
        if len(task_ids) == 1:  # the common case (ready()/state): two plain commands, one round trip
            task_id = task_ids[0]
            commands: list[tuple[Any, ...]] = [("LINDEX", self.keys.done(task_id), 0),
                                               ("HGET", self.keys.result(task_id), "meta")]
            if not self.cluster:  # Celery's key: written by a Celery worker (never on a cluster)
                commands.append(("GET", self.celery_key(task_id)))
            replies = guarded(self.url, "read a result", functools.partial(pipelined, self.client, *commands))
            data = next((r for r in replies if r), None)
            return {task_id: self.decode(data)} if data else {}
        out: dict[str, dict[str, Any]] = {}
        for chunk, keys, args in self.fetch_calls(task_ids):
            found = guarded(self.url, "read results", functools.partial(self._fetch, args, keys))
            out.update({t: self.decode(data) for t, data in zip(chunk, found, strict=True) if data})
        return out

    def fetch_calls(self, task_ids: Sequence[str]) -> list[tuple[list[str], list[str], list[Any]]]:
        """(ids, KEYS, ARGV) of the FETCH_RESULTS calls: at most 1000 ids a call, one hash slot a
        call on a cluster (shared with the asyncio client). Celery's keys are read too, except
        on a cluster."""
        calls = []
        for group in slot_groups(self.client, list(task_ids), self.keys.result):
            for i in range(0, len(group), 1000):
                chunk = group[i:i + 1000]
                keys = [k for t in chunk for k in (self.keys.done(t), self.keys.result(t),
                                                  *(() if self.cluster else (self.celery_key(t),)))]
                calls.append((chunk, keys, ["2" if self.cluster else "3"]))
        return calls

    def wait(self, task_id: str, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        done = self.keys.done(task_id)
        backoff = 0.05
        poll = 0.02  # Celery's workers ring only their pub/sub channel: look at their key now and then
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0.001:
                try:
                    return self.get(task_id)
                except OperationalError:
                    return None
            block = min(remaining, _BLOCK_CHUNK)
            if self.celery:
                found = self._celery_final(task_id)
                if found is not None:
                    return found
                block, poll = min(block, poll), min(poll * 2, 0.25)
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

    def celery_key(self, task_id: str) -> str:
        """Where Celery's Redis result backend keeps a task's meta (and the channel it publishes on)."""
        return celery_task_meta(self.celery_prefix, task_id)

    def _celery_final(self, task_id: str) -> dict[str, Any] | None:
        try:
            data = guarded(self.url, "read a result", functools.partial(self.client.get, self.celery_key(task_id)))
        except OperationalError:
            return None  # the blocking wait below rides out the outage
        meta = self.decode(data) if data else None
        return meta if meta is not None and meta.get("status") in states.READY_STATES else None

    def _record_chord_parts(self, parts: Sequence[ChordPart]) -> list[tuple[ChordPart, list[tuple[int, bytes]]]]:
        fired = []
        for group in slot_groups(self.client, parts, lambda part: self.keys.chord(part.group_id)):
            args: list[Any] = [int(self.expires * 1000) if self.expires else 0, "1" if self.celery else ""]
            keys: list[str] = []
            for part in group:
                args += [part.index, part.size, part.task_id, 1 if part.failed else 0, part.data]
                keys += [self.keys.chord_parts(part.group_id), self.keys.chord(part.group_id)]
                if self.celery:
                    keys.append(celery_chord_size(self.celery_prefix, part.group_id))
            reply = guarded(self.url, "record chord members", functools.partial(self._chord_parts, args, keys))
            for number, total, flat in reply:
                part = group[int(number) - 1]
                part.size = int(total)
                fired.append((part, [(int(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)]))
        return fired

    def chord_extend(self, group_id: str, count: int = 1) -> int:
        args = [int(self.expires * 1000) if self.expires else 0, count]
        keys = [self.keys.chord(group_id)]
        return int(guarded(self.url, "add chord members", lambda: self._chord_extend(args, keys)))

    def schedule_store(self, name: str, publish: Publisher) -> ScheduleStore | None:
        return RedisScheduleStore(self.url, self.client, self.keys.prefix, name, publish)

    def event_channel(self) -> EventChannel | None:
        return RedisEventChannel(self.url, self.client, self.keys.prefix,
                                 int(self.options.get("events_max_len", 10000)))

    def worker_heartbeat(self, worker_id: str, ttl: float, info: dict[str, Any] | None) -> None:
        k = self.keys
        if info is None:
            commands: tuple[tuple[Any, ...], ...] = (("ZREM", k.beats, worker_id), ("HDEL", k.beats_info, worker_id))
        else:
            until = int((time.time() + ttl) * 1000)
            commands = (("ZADD", k.beats, until, worker_id), ("HSET", k.beats_info, worker_id, json.dumps(info)))
        guarded(self.url, "record a worker heartbeat", functools.partial(pipelined, self.client, *commands))

    def live_workers(self) -> dict[str, dict[str, Any]]:
        now = int(time.time() * 1000)
        ids = guarded(self.url, "list workers",
                      functools.partial(self.client.zrangebyscore, self.keys.beats, now, "+inf"))
        if not ids:
            return {}
        infos = guarded(self.url, "list workers", functools.partial(self.client.hmget, self.keys.beats_info, ids))
        return {(i.decode() if isinstance(i, bytes) else str(i)): json.loads(info) for i, info in zip(ids, infos,
                                                                                                      strict=True)
                if info}

    def control_send(self, command: dict[str, Any], expires_in: float) -> None:
        now = int(time.time() * 1000)
        args = [now, now + int(expires_in * 1000), json.dumps(command)]
        keys = [self.keys.control, self.keys.control_exp, self.keys.control_seq]
        guarded(self.url, "send a control command", lambda: self._control_send(args, keys))

    def control_since(self, cursor: int) -> tuple[list[dict[str, Any]], int]:
        if cursor < 0:
            last = guarded(self.url, "read the control log", lambda: self.client.get(self.keys.control_seq))
            return [], int(last or 0)
        members = guarded(self.url, "read the control log", lambda: self.client.zrangebyscore(
            self.keys.control, f"({cursor}", "+inf"))
        return _control_entries(members, cursor)

    def follow_logs(self, control_cursor: int, revoke_cursor: int) -> tuple[
            tuple[list[dict[str, Any]], int], tuple[list[tuple[str, str | None]], int]]:
        if self.cluster or control_cursor < 0:  # two hash slots / a cursor to look up first
            return super().follow_logs(control_cursor, revoke_cursor)
        revoked = ("EVALSHA", self._revoked_since.sha, 2, self.keys.revoked, self.keys.revoked_exp,
                   int(time.time() * 1000), revoke_cursor)
        def read_both() -> list[Any] | None:
            try:
                return pipelined(self.client, ("ZRANGEBYSCORE", self.keys.control, f"({control_cursor}", "+inf"),
                                 revoked)
            except NoScriptError:  # the server lost its script cache: the script call loads it again
                return None

        both = guarded(self.url, "read the control log and revocations", read_both)
        if both is None:
            return super().follow_logs(control_cursor, revoke_cursor)
        return _control_entries(both[0], control_cursor), _revocations(both[1], revoke_cursor)

    def control_reply(self, reply_id: str, reply: dict[str, Any], expires_in: float) -> None:
        key = self.keys.reply(reply_id)
        guarded(self.url, "reply to a control command", functools.partial(
            pipelined, self.client, ("RPUSH", key, json.dumps(reply)), ("PEXPIRE", key, int(expires_in * 1000))))

    def control_replies(self, reply_id: str) -> list[dict[str, Any]]:
        key = self.keys.reply(reply_id)
        return [json.loads(r) for r in guarded(self.url, "read control replies",
                                                lambda: self.client.lrange(key, 0, -1))]

    def reserve_rate_slot(self, key: str, interval: float) -> float:
        args, keys = [int(interval * 1_000_000)], [self.keys.rate(key)]
        micros = guarded(self.url, "reserve a rate-limit slot", lambda: self._reserve_rate_slot(args, keys))
        return max(0.0, int(micros) / 1_000_000)

    def claim_unique(self, key: str, task_id: str, ttl: float) -> str:
        args, keys = [task_id, max(1, int(ttl * 1000))], [self.keys.unique(key)]
        holder = guarded(self.url, "claim a unique key", lambda: self._claim_unique(args, keys))
        return holder.decode() if isinstance(holder, bytes) else str(holder)

    def release_unique(self, held: Sequence[tuple[str, str]]) -> None:
        for group in slot_groups(self.client, held, lambda pair: self.keys.unique(pair[0])):
            keys, ids = [self.keys.unique(k) for k, _ in group], [t for _, t in group]
            guarded(self.url, "release unique keys", functools.partial(self._release_unique, ids, keys))

    def revoke(self, task_ids: Sequence[str], expires_in: float, signal: str | None = None) -> None:
        now = int(time.time() * 1000)
        args = [now + int(expires_in * 1000), signal or "", *task_ids]
        keys = [self.keys.revoked, self.keys.revoked_exp, self.keys.revoked_seq]
        guarded(self.url, "record revocations", lambda: self._revoke(args, keys))

    def revoked_since(self, cursor: int) -> tuple[list[tuple[str, str | None]], int]:
        args, keys = [int(time.time() * 1000), cursor], [self.keys.revoked, self.keys.revoked_exp]
        members = guarded(self.url, "read revocations", lambda: self._revoked_since(args, keys))
        return _revocations(members, cursor)

    def forget(self, task_ids: Sequence[str]) -> None:
        keys = [k for t in as_id_list(task_ids) for k in (self.keys.result(t), self.keys.done(t), self.celery_key(t))]
        if keys:  # one DEL per key: on a cluster they are in many hash slots
            guarded(self.url, "forget results", functools.partial(pipelined, self.client, *(("DEL", k) for k in keys)))

    def upgrade_legacy_layout(self) -> int:
        from .legacy import move_store_keys
        return move_store_keys(self.client, self.url, self.keys, self.cluster)

    def cleanup(self) -> int:
        self.trim_history()
        return 0  # Redis expires results by itself (PEXPIRE)

    def close(self) -> None:
        self.history_buffer.flush()  # a pool process that ends writes its last records now

    def task_history(self, query: HistoryQuery) -> list[TaskRecord]:
        self.history_buffer.flush()
        return self.history.query(query)

    def _history_floor(self, query: HistoryQuery, scan: int) -> float | None:
        self.history_buffer.flush()
        return self.history.floor(query, scan)

    def task_record(self, task_id: str) -> TaskRecord | None:
        self.history_buffer.flush()
        return self.history.one(task_id)

    def task_counts(self) -> dict[tuple[str, str], int]:
        self.history_buffer.flush()
        return self.history.counts()

    def trim_history(self) -> int:
        self.history_buffer.flush()
        return self.history.trim(self.history_expires, self.history_max)


def _control_entries(members: Sequence[Any], cursor: int) -> tuple[list[dict[str, Any]], int]:
    """The control log's members ("seq|command JSON") as commands, and the cursor after them."""
    found = []
    for raw in members:
        seq, _, text = (raw.decode() if isinstance(raw, bytes) else str(raw)).partition("|")
        found.append(json.loads(text))
        cursor = max(cursor, int(seq))
    return found, cursor


def _revocations(members: Sequence[Any], cursor: int) -> tuple[list[tuple[str, str | None]], int]:
    """The revocation log's members ("seq|signal|task id"), and the cursor after them."""
    found: list[tuple[str, str | None]] = []
    for raw in members:
        seq, sig, task_id = (raw.decode() if isinstance(raw, bytes) else str(raw)).split("|", 2)
        found.append((task_id, sig or None))
        cursor = max(cursor, int(seq))
    return found, cursor
