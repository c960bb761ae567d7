"""Redis broker: many machines, one Redis 7 server.

The atomic parts live in Lua (`redis_scripts.py`); this class only packs arguments and
turns Redis errors into OperationalError. Leases are per worker (renewed by its
heartbeat, on Redis' clock), so a slow task on a live worker is never redelivered.

Queues shared with Celery (`celery_wire_queues`, docs/celery-interop.md): priority-0
messages are published onto kombu's list in kombu's envelope, where Celery's workers read
them too, and a fetch first adopts messages from kombu's lists into the leased structure
(in the same script), so celeriac's guarantees start the moment a celeriac worker has one.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from typing import Any, Sequence

from .. import protocol
from .._redis import (Keys, RedisEventChannel, RedisScheduleStore, Script, client_for, guarded, key_prefix,
                      kombu_prefix, pipelined)
from ..exceptions import DecodeError
from . import redis_scripts as lua
from .redis_publish import PublishLink
from .base import Broker, DeadLetter, Delivery, EventChannel, Outgoing, Publisher, ScheduleStore, clamp_priority

logger = logging.getLogger("celeriac.worker")

_CHUNK = 500  # messages per script call: keeps each call short so Redis stays responsive
KOMBU_SEP = "\x06\x16"  # kombu's separator between a queue's name and its priority step
KOMBU_STEPS = (0, 3, 6, 9)  # kombu's priority lists of a queue, read in this order


class RedisBroker(Broker):
    schemes = ("redis", "rediss", "unix")

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options)
        self.client = client_for(url, self.options)
        self.keys = Keys(key_prefix(self.options))
        self._p = self.keys.prefix
        self._publish = Script(self.client, lua.PUBLISH)
        self._fetch = Script(self.client, lua.FETCH)
        self._ack = Script(self.client, lua.ACK)
        self._release = Script(self.client, lua.RELEASE)
        self._requeue_owner = Script(self.client, lua.REQUEUE_OWNER)
        self._dead_letter = Script(self.client, lua.DEAD_LETTER)
        self._heartbeat = Script(self.client, lua.HEARTBEAT)
        self._unregister = Script(self.client, lua.UNREGISTER)
        self._recover = Script(self.client, lua.RECOVER)
        self._purge = Script(self.client, lua.PURGE)
        self._sizes = Script(self.client, lua.SIZES)
        self._requeue_dead = Script(self.client, lua.REQUEUE_DEAD)
        self._defer = Script(self.client, lua.DEFER)
        self._link = PublishLink(self.client)  # publishing: a connection per thread (redis_publish.py)
        # Queues shared with Celery: published to kombu's lists, adopted from them (module docs).
        self.wire = frozenset(self.options.get("celery_wire_queues") or ())
        self.wire_poll = float(self.options.get("celery_wire_poll_interval", 0.1))
        self.kombu_prefix = kombu_prefix(self.options)
        # kombu's: how long a Celery worker may hold a message unacknowledged before it is given back.
        self.celery_visibility = float(self.options.get("celery_visibility_timeout")
                                       or self.options.get("visibility_timeout") or 3600)

    def _run(self, what: str, script: Any, args: list[Any]) -> Any:
        return guarded(self.url, what, lambda: script(args))

    def publish(self, messages: Sequence[Outgoing]) -> None:
        native, kombu = self._split_wire(messages)
        if len(kombu) == 1:  # one message: its push, then the wake-up; no transaction needed (kombu_commands)
            guarded(self.url, "publish", functools.partial(self._link.pipeline, self.kombu_commands(kombu)))
        elif kombu:
            guarded(self.url, "publish", lambda: self._pipeline(self.kombu_commands(kombu)))
        for args in self.publish_calls(native):
            guarded(self.url, "publish", functools.partial(self._link.script, self._publish, args))

    def publish_calls(self, messages: Sequence[Outgoing]) -> list[list[Any]]:
        """The PUBLISH script's arguments for messages in celeriac's own layout, one list per
        call (shared with the asyncio client; `_split_wire` first takes out kombu's)."""
        calls = []
        for start in range(0, len(messages), _CHUNK):
            args: list[Any] = [self._p]
            for m in messages[start:start + _CHUNK]:
                args += [m.queue, clamp_priority(m.priority), int(m.eta * 1000) if m.eta else 0, m.payload]
            calls.append(args)
        return calls

    def _split_wire(self, messages: Sequence[Outgoing]) -> tuple[list[Outgoing], list[tuple[str, str, bytes]]]:
        """Messages of priority 0 for Celery's wire queues become kombu envelopes on kombu's list,
        so a Celery worker can take them too; an ETA travels in the `eta` header, as Celery's
        clients send it. Priorities 1-9 stay in celeriac's layout beside it, exact and higher
        first, for celeriac workers only (kombu's four steps and reversed order could not keep
        them). Bytes that are not a task message stay too (the worker dead-letters them)."""
        if not self.wire:
            return list(messages), []
        native: list[Outgoing] = []
        shared: list[tuple[Outgoing, protocol.TaskMessage]] = []
        for m in messages:
            if m.queue not in self.wire or clamp_priority(m.priority) > 0:
                native.append(m)
                continue
            msg = m.message  # the publisher's own message: nothing to decode
            if msg is None:
                try:
                    msg = protocol.unpack(m.payload)
                except DecodeError:
                    native.append(m)
                    continue
            shared.append((m, msg))
        tags = protocol.new_ids(len(shared)) if shared else []  # kombu's delivery tags, made in one go
        kombu: list[tuple[str, str, bytes]] = []
        for (m, msg), tag in zip(shared, tags, strict=True):
            headers = None
            if m.eta and (_epoch(msg.headers.get("eta")) or 0.0) < m.eta - 0.001:
                # The header is what a worker goes by on kombu's list (e.g. a rate-limited task
                # published again with its reserved start, its header still saying the old eta).
                import datetime as dt
                headers = {**msg.headers, "eta": protocol.to_iso(dt.datetime.fromtimestamp(m.eta, dt.UTC))}
            kombu.append((m.queue, self.kombu_prefix + m.queue,
                          protocol.kombu_envelope(msg, m.queue, 0, headers=headers, delivery_tag=tag)))
        return native, kombu

    def kombu_commands(self, items: list[tuple[str, str, bytes]]) -> list[tuple[Any, ...]]:
        """The commands that put kombu envelopes on kombu's lists and wake idle celeriac
        workers (shared with the asyncio client): one LPUSH per list with all its envelopes
        (the same order as one LPUSH each), in chunks. Many messages are sent as one MULTI/EXEC,
        so a connection lost half-way leaves nothing to push twice on the retry; one message
        is sent without it, its push first: a wake-up lost with the connection only costs a
        worker the `celery_wire_poll_interval` it looks at kombu's lists after anyway."""
        by_key: dict[str, list[bytes]] = {}
        for _queue, key, envelope in items:
            by_key.setdefault(key, []).append(envelope)
        commands: list[tuple[Any, ...]] = [("LPUSH", key, *envelopes[start:start + _CHUNK])
                                           for key, envelopes in by_key.items()
                                           for start in range(0, len(envelopes), _CHUNK)]
        for queue in {q for q, _k, _e in items}:
            commands += [("LPUSH", self.keys.signal(queue), 1), ("LTRIM", self.keys.signal(queue), 0, 63)]
        return commands

    def _pipeline(self, commands: list[tuple[Any, ...]]) -> None:
        self._link.transaction(commands)  # MULTI/EXEC on the publish path's own connection

    def fetch(self, queues: Sequence[str], worker_id: str, owner: str, limit: int,
              timeout: float, in_flight: int = 0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        signals = [self.keys.signal(q) for q in queues]
        wire = ",".join(q for q in queues if q in self.wire)
        while True:
            reply = self._run("fetch", self._fetch, [self._p, worker_id, owner, int(limit), wire, self.kombu_prefix,
                                                     *queues])
            if len(reply) > 1:
                got = [Delivery(_text(reply[i]), _text(reply[i + 1]), reply[i + 4], int(reply[i + 3]),
                                int(reply[i + 2]), owner) for i in range(0, len(reply), 5)]
                got = self._defer_early(owner, got) if wire else got
                if got:
                    return got
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            due_ms = int(reply[0]) if reply else -1
            wait = remaining if due_ms < 0 else min(remaining, due_ms / 1000 + 0.001)
            if wire:  # a Celery client's LPUSH rings no bell: look at kombu's lists again soon
                wait = min(wait, self.wire_poll)
            if wait >= 0.001:
                # Publishers push a token per queue; a token left from earlier only costs a re-check.
                guarded(self.url, "wait for messages",
                        functools.partial(self.client.blpop, signals, timeout=max(wait, 0.001)))

    def _defer_early(self, owner: str, deliveries: list[Delivery]) -> list[Delivery]:
        """A message adopted from kombu's list may carry a future `eta` (a Celery client's
        countdown): it goes to the delayed set, kept by Redis, instead of to the worker."""
        due: list[Delivery] = []
        later: list[Any] = []
        now = time.time()
        for d in deliveries:
            eta = None
            if bytes(d.payload[:1]) == b"{":
                try:
                    eta = _epoch(protocol.unpack(d.payload).headers.get("eta"))
                except DecodeError:
                    eta = None  # undecodable: the worker dead-letters it
            if eta is not None and eta > now:
                later += [d.tag, int(eta * 1000)]
            else:
                due.append(d)
        if later:
            self._run("delay messages", self._defer, [self._p, owner, *later])
        return due

    def _kombu_lists(self, queue: str) -> list[str]:
        return [self.kombu_prefix + (f"{queue}{KOMBU_SEP}{step}" if step else queue) for step in KOMBU_STEPS]

    def housekeeping(self) -> None:
        if self.wire:
            restored = guarded(self.url, "restore Celery's unacknowledged messages", self._restore_celery_unacked)
            if restored:
                logger.warning("gave back %d message(s) that a Celery worker took and never acknowledged (older "
                               "than visibility_timeout=%ss in kombu's 'unacked'): it probably died", restored,
                               self.celery_visibility)

    def _restore_celery_unacked(self) -> int:
        """What kombu's own restore does - which needs a live Celery worker, so nobody would once
        the last one is gone: a message a Celery worker took from a shared queue and held past
        the visibility timeout goes back onto kombu's list, marked redelivered. Each move is
        one transaction, watched, so a Celery worker restoring at the same time cannot double it."""
        from redis.exceptions import WatchError
        index, table = self.kombu_prefix + "unacked_index", self.kombu_prefix + "unacked"
        tags = self.client.zrangebyscore(index, "-inf", time.time() - self.celery_visibility, start=0, num=1000)
        restored = 0
        for tag in tags:
            with self.client.pipeline() as pipe:
                try:
                    pipe.watch(table)
                    raw = pipe.hget(table, tag)
                    message, queue = _unacked_entry(raw)
                    if raw is not None and queue not in self.wire:
                        continue  # a Celery-only queue: Celery's workers restore their own
                    pipe.multi()
                    pipe.zrem(index, tag)
                    pipe.hdel(table, tag)
                    if message is not None:
                        pipe.rpush(self._kombu_list_for(queue, message), json.dumps(message))
                        pipe.lpush(self.keys.signal(queue), 1)
                        restored += 1
                    pipe.execute()
                except WatchError:
                    continue  # someone else moved it first
        return restored

    def _kombu_list_for(self, queue: str, message: dict[str, Any]) -> str:
        priority = int((message.get("properties") or {}).get("priority") or 0)
        step = max(s for s in KOMBU_STEPS if s <= max(0, min(9, priority)))
        return self.kombu_prefix + (f"{queue}{KOMBU_SEP}{step}" if step else queue)

    def held_messages(self, worker_id: str) -> list[tuple[str, bytes]] | None:
        client, keys = self.client, self.keys
        out: list[tuple[str, bytes]] = []
        owners = guarded(self.url, "inspect", functools.partial(client.smembers, keys.owners(worker_id)))
        for raw_owner in owners:
            owner = _text(raw_owner)
            ids = guarded(self.url, "inspect", functools.partial(client.hkeys, keys.held(owner)))
            if ids:
                payloads = guarded(self.url, "inspect", functools.partial(client.hmget, keys.payload, ids))
                out.extend((owner, bytes(p)) for p in payloads if p is not None)
        return out

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._by_worker("ack", self._ack, deliveries)

    def release(self, deliveries: Sequence[Delivery]) -> None:
        self._by_worker("release", self._release, deliveries)

    def _by_worker(self, what: str, script: Any, deliveries: Sequence[Delivery]) -> None:
        groups: dict[str, list[str]] = {}
        for d in deliveries:
            groups.setdefault(d.owner, []).append(d.tag)
        for owner, ids in groups.items():
            for start in range(0, len(ids), _CHUNK):
                self._run(what, script, [self._p, owner, *ids[start:start + _CHUNK]])

    def requeue_owner(self, owner: str, running_tag: str | None, keep_all_counts: bool = False) -> int:
        return int(self._run("give back messages", self._requeue_owner,
                             [self._p, owner, running_tag or "", "1" if keep_all_counts else ""]))

    def dead_letter(self, items: Sequence[tuple[Delivery, str]]) -> None:
        groups: dict[str, list[Any]] = {}
        for delivery, reason in items:
            groups.setdefault(delivery.owner, []).extend([delivery.tag, reason])
        for owner, pairs in groups.items():
            self._run("dead-letter", self._dead_letter, [self._p, owner, *pairs])

    def schedule_store(self, name: str, publish: Publisher) -> ScheduleStore | None:
        return RedisScheduleStore(self.url, self.client, self._p, name, None)  # the script publishes

    def event_channel(self) -> EventChannel | None:
        channel = RedisEventChannel(self.url, self.client, self._p, int(self.options.get("events_max_len", 10000)))
        if not self.wire:
            return channel
        from .celery_events import MirroredEventChannel, redis_mirror  # Celery's monitors see us too
        return MirroredEventChannel(channel, redis_mirror(self.client, self.kombu_prefix))

    def heartbeat(self, worker_id: str, ttl: float, info: dict[str, Any] | None = None) -> None:
        self._run("heartbeat", self._heartbeat, [self._p, worker_id, int(ttl * 1000), json.dumps(info or {})])

    def unregister(self, worker_id: str) -> int:
        return int(self._run("unregister worker", self._unregister, [self._p, worker_id]))

    def recover(self) -> int:
        return int(self._run("recover messages of dead workers", self._recover, [self._p]))

    def purge(self, queues: Sequence[str]) -> int:
        if not queues:
            return 0
        kombu = [key for q in queues if q in self.wire for key in self._kombu_lists(q)]
        if kombu:
            def drop() -> int:
                pipe = self.client.pipeline(transaction=True)
                for key in kombu:
                    pipe.llen(key)
                pipe.delete(*kombu)
                return sum(int(n) for n in pipe.execute()[:-1])
            dropped = guarded(self.url, "purge", drop)
        else:
            dropped = 0
        return dropped + int(self._run("purge", self._purge, [self._p, *queues]))

    def queue_sizes(self, queues: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        if queues is None:
            prefix = self.keys.ready("")
            found = guarded(self.url, "list queues", lambda: list(self.client.scan_iter(match=prefix + "*")))
            queues = sorted({_text(k)[len(prefix):] for k in found})
        if not queues:
            return {}
        rows = self._run("queue sizes", self._sizes, [self._p, *queues])
        sizes = {_text(r[0]): {"ready": int(r[1]), "reserved": int(r[2]), "delayed": int(r[3])} for r in rows}
        for queue in (q for q in queues if q in self.wire):  # what still waits in kombu's lists is ready too
            lengths = guarded(self.url, "queue sizes", functools.partial(
                pipelined, self.client, *(("LLEN", key) for key in self._kombu_lists(queue))))
            sizes[queue]["ready"] += sum(int(n) for n in lengths)
        return sizes

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        def read() -> list[DeadLetter]:
            ids = [_text(i) for i in self.client.zrevrange(self.keys.dead, 0, limit - 1)]
            if not ids:
                return []
            payloads = self.client.hmget(self.keys.dead_payload, ids)
            infos = self.client.hmget(self.keys.dead_info, ids)
            out = []
            for dead_id, payload, info in zip(ids, payloads, infos, strict=True):
                meta = json.loads(info) if info else {}
                out.append(DeadLetter(dead_id, meta.get("queue", ""), payload or b"", meta.get("reason", ""),
                                      float(meta.get("at", 0)), int(meta.get("deliveries", 0))))
            return out

        return guarded(self.url, "read dead letters", read)

    def requeue_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        return int(self._run("requeue dead letters", self._requeue_dead, [self._p, *(ids or [])]))

    def live_workers(self) -> dict[str, dict[str, Any]]:
        def read() -> dict[str, dict[str, Any]]:
            seconds, micros = self.client.time()
            now_ms = seconds * 1000 + micros // 1000
            names = [_text(w) for w in self.client.zrangebyscore(self.keys.workers, now_ms, "+inf")]
            infos = self.client.hmget(self.keys.workerinfo, names) if names else []
            return {n: json.loads(i) if i else {} for n, i in zip(names, infos, strict=True)}

        return guarded(self.url, "list workers", read)

    def close(self) -> None:
        self._link.close()
        self.client.close()


def _unacked_entry(raw: Any) -> tuple[dict[str, Any] | None, str]:
    """kombu's unacked entry: [message, exchange, routing key] -> (message marked redelivered, queue)."""
    try:
        message, _exchange, queue = json.loads(raw)
        message.setdefault("headers", {})["redelivered"] = True
        message.setdefault("properties", {}).setdefault("delivery_info", {})["redelivered"] = True
        return message, str(queue)
    except (TypeError, ValueError, AttributeError):
        return None, ""  # unreadable: dropped from the index, as kombu drops what it cannot restore


def _epoch(eta: Any) -> float | None:
    try:
        return protocol.iso_to_epoch(eta) if isinstance(eta, str) else None
    except ValueError:
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
