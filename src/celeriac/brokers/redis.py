"""Redis broker: many machines, one Redis 7 server.

The atomic parts live in Lua (`redis_scripts.py`); this class only packs arguments and
turns Redis errors into OperationalError. Leases are per worker (renewed by its
heartbeat, on Redis' clock), so a slow task on a live worker is never redelivered.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Sequence

from .._redis import Keys, RedisEventChannel, RedisScheduleStore, Script, client_for, guarded, key_prefix
from . import redis_scripts as lua
from .base import Broker, DeadLetter, Delivery, EventChannel, Outgoing, Publisher, ScheduleStore, clamp_priority

_CHUNK = 500  # messages per script call: keeps each call short so Redis stays responsive


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

    def _run(self, what: str, script: Any, args: list[Any]) -> Any:
        return guarded(self.url, what, lambda: script(args))

    def publish(self, messages: Sequence[Outgoing]) -> None:
        for args in self.publish_calls(messages):
            self._run("publish", self._publish, args)

    def publish_calls(self, messages: Sequence[Outgoing]) -> list[list[Any]]:
        """The PUBLISH script's arguments, one list per call (shared with the asyncio client)."""
        calls = []
        for start in range(0, len(messages), _CHUNK):
            args: list[Any] = [self._p]
            for m in messages[start:start + _CHUNK]:
                args += [m.queue, clamp_priority(m.priority), int(m.eta * 1000) if m.eta else 0, m.payload]
            calls.append(args)
        return calls

    def fetch(self, queues: Sequence[str], worker_id: str, owner: str, limit: int,
              timeout: float, in_flight: int = 0) -> list[Delivery]:
        import time
        deadline = time.monotonic() + timeout
        signals = [self.keys.signal(q) for q in queues]
        while True:
            reply = self._run("fetch", self._fetch, [self._p, worker_id, owner, int(limit), *queues])
            if len(reply) > 1:
                return [Delivery(_text(reply[i]), _text(reply[i + 1]), reply[i + 4], int(reply[i + 3]),
                                 int(reply[i + 2]), owner) for i in range(0, len(reply), 5)]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            due_ms = int(reply[0]) if reply else -1
            wait = remaining if due_ms < 0 else min(remaining, due_ms / 1000 + 0.001)
            if wait >= 0.001:
                # Publishers push a token per queue; a token left from earlier only costs a re-check.
                guarded(self.url, "wait for messages",
                        functools.partial(self.client.blpop, signals, timeout=max(wait, 0.001)))

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
        return RedisEventChannel(self.url, self.client, self._p, int(self.options.get("events_max_len", 10000)))

    def heartbeat(self, worker_id: str, ttl: float, info: dict[str, Any] | None = None) -> None:
        self._run("heartbeat", self._heartbeat, [self._p, worker_id, int(ttl * 1000), json.dumps(info or {})])

    def unregister(self, worker_id: str) -> int:
        return int(self._run("unregister worker", self._unregister, [self._p, worker_id]))

    def recover(self) -> int:
        return int(self._run("recover messages of dead workers", self._recover, [self._p]))

    def purge(self, queues: Sequence[str]) -> int:
        return int(self._run("purge", self._purge, [self._p, *queues])) if queues else 0

    def queue_sizes(self, queues: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        if queues is None:
            prefix = self.keys.ready("")
            found = guarded(self.url, "list queues", lambda: list(self.client.scan_iter(match=prefix + "*")))
            queues = sorted({_text(k)[len(prefix):] for k in found})
        if not queues:
            return {}
        rows = self._run("queue sizes", self._sizes, [self._p, *queues])
        return {_text(r[0]): {"ready": int(r[1]), "reserved": int(r[2]), "delayed": int(r[3])} for r in rows}

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
        self.client.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
