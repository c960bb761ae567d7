"""Redis broker: many machines, one Redis 7 server (or a Redis Cluster, or a Sentinel-watched master).

The atomic parts live in Lua (`scripts.py`); this class only names the keys
(`keys.py`), packs arguments and turns Redis errors into OperationalError. Each queue's
keys share a hash tag: a call about several queues is one script on a single server and one
per hash slot on a cluster (`slot_groups`). Leases are per worker (renewed by its
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

from ... import protocol
from .client import reply_text as _text, score_pairs as _pairs
from .client import (RedisEventChannel, RedisScheduleStore, Script, client_for, close_client, guarded, key_prefix,
                      kombu_prefix, pipelined, replica_wait, transaction)
from .keys import KOMBU_STEPS, Keys, QueueKeys, kombu_list, kombu_lists, kombu_unacked
from .topology import is_cluster, is_cluster_url, slot_groups
from ...exceptions import DecodeError
from . import scripts as lua
from .legacy import LegacyLayout
# Imported here, not where the channel is made: pool processes make it from several threads at
# once, and two threads importing these two modules concurrently once met a half-made module.
from ...brokers.celery_events import MirroredEventChannel  # Celery's monitors see us too
from .celery_events import redis_mirror
from ...brokers.base import (Broker, Delivery, EventChannel, Outgoing, Publisher, ScheduleStore,
                             clamp_priority, oldest_of)
from .publish import PublishLink
from .dead_letters import DeadLetters
from .waiting import TimelyWait

logger = logging.getLogger("celeriac.worker")

_CHUNK = 500  # messages per script call: keeps each call short so Redis stays responsive
_BAND = 10**12  # one priority's span of ready-set scores


class RedisBroker(DeadLetters, Broker):
    schemes = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster", "sentinel")

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options)
        if is_cluster_url(url):
            self.options["celery_wire_queues"] = _no_wire_on_cluster(self.options.get("celery_wire_queues"))
        self.client = client_for(url, self.options)
        self.cluster = is_cluster(self.client)
        self.keys = Keys(key_prefix(self.options))
        self._registered: set[str] = set()  # queues this process has put in the `queues` set
        self._register_again = 0.0
        self._publish = Script(self.client, lua.PUBLISH)
        self._fetch = Script(self.client, lua.FETCH)
        self._ack = Script(self.client, lua.ACK)
        self._release = Script(self.client, lua.RELEASE)
        self._requeue_owner = Script(self.client, lua.REQUEUE_OWNER)
        self._dead_letter = Script(self.client, lua.DEAD_LETTER)
        self._heartbeat = Script(self.client, lua.HEARTBEAT)
        self._dead_holders = Script(self.client, lua.DEAD_HOLDERS)
        self._give_back = Script(self.client, lua.GIVE_BACK_WORKERS)
        self._purge = Script(self.client, lua.PURGE)
        self._requeue_dead = Script(self.client, lua.REQUEUE_DEAD)
        self._defer = Script(self.client, lua.DEFER)
        # Publishing on a connection per thread (publish.py) - on one plain server; a
        # cluster, Sentinel's changing master and `wait_replicas` go through redis-py's clients.
        plain = not self.cluster and replica_wait(self.client) is None and not url.startswith("sentinel")
        spin_us = float(self.options.get("reply_spin_us", 100))
        self._link = PublishLink(self.client, spin_us) if plain else None
        self._waiter = TimelyWait(self.client)  # wakes when a delayed message is due, not on Redis' next tick
        # Queues shared with Celery: published to kombu's lists, adopted from them (module docs).
        self.wire = frozenset(self.options.get("celery_wire_queues") or ())
        self.wire_poll = float(self.options.get("celery_wire_poll_interval", 0.1))
        self.kombu_prefix = kombu_prefix(self.options)
        # kombu's: how long a Celery worker may hold a message unacknowledged before it is given back.
        self.celery_visibility = float(self.options.get("celery_visibility_timeout")
                                       or self.options.get("visibility_timeout") or 3600)

    def _run(self, what: str, script: Any, args: list[Any], keys: Sequence[str]) -> Any:
        return guarded(self.url, what, lambda: script(args, keys))

    def _q(self, queue: str) -> QueueKeys:
        return self.keys.queue(queue)

    def _by_slot(self, queues: Sequence[str]) -> list[list[str]]:
        """The queues, in groups one script call can serve (all of them on a single server)."""
        return slot_groups(self.client, list(dict.fromkeys(queues)), lambda q: self._q(q).ready)

    def publish(self, messages: Sequence[Outgoing]) -> None:
        native, kombu = self._split_wire(messages)
        if len(kombu) == 1 and self._link is not None:  # the push and the wake-up in one write
            # Three plain commands in one write cost Redis ~20 µs less than the same three run by a
            # script (measured: EVALSHA's own overhead is most of a single push); all three replies
            # are read, so a returned publish still means Redis has the message.
            queue, key, envelope = kombu[0]
            signal = self.keys.signal(queue)
            guarded(self.url, "publish", functools.partial(self._link.pipeline, [
                ("LPUSH", key, envelope), ("LPUSH", signal, 1), ("LTRIM", signal, 0, 63)]))
        elif kombu:
            guarded(self.url, "publish", lambda: self._pipeline(self.kombu_commands(kombu)))
        for keys, args in self.publish_calls(native):
            if self._link is not None:
                guarded(self.url, "publish", functools.partial(self._link.script, self._publish, args, keys))
            else:
                self._run("publish", self._publish, args, keys)

    def publish_calls(self, messages: Sequence[Outgoing]) -> list[tuple[list[str], list[Any]]]:
        """(KEYS, ARGV) of the PUBLISH calls for messages in celeriac's own layout (shared with
        the asyncio client; `_split_wire` first takes out kombu's): at most _CHUNK messages a
        call, and on a cluster one call per hash slot."""
        if self.cluster and len({m.queue for m in messages}) > 1:
            by_queue: dict[str, list[Outgoing]] = {}
            for m in messages:
                by_queue.setdefault(m.queue, []).append(m)
            groups = [[m for q in group for m in by_queue[q]] for group in self._by_slot(list(by_queue))]
        else:
            groups = [list(messages)] if messages else []
        calls = []
        for group in groups:
            for start in range(0, len(group), _CHUNK):
                blocks: dict[str, int] = {}
                args: list[Any] = []
                for m in group[start:start + _CHUNK]:
                    block = blocks.get(m.queue)
                    if block is None:
                        block = blocks[m.queue] = len(blocks) + 1
                    args += [block, clamp_priority(m.priority), int(m.eta * 1000) if m.eta else 0, m.payload]
                calls.append(([k for q in blocks for k in self._q(q).publish_block()], args))
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
        tags = protocol.delivery_tags(len(shared))
        lists: dict[str, str] = {}  # kombu's list of each queue, named once per call
        kombu: list[tuple[str, str, bytes]] = []
        for (m, msg), tag in zip(shared, tags, strict=True):
            headers = None
            if m.eta and (_epoch(msg.headers.get("eta")) or 0.0) < m.eta - 0.001:
                # The header is what a worker goes by on kombu's list (e.g. a rate-limited task
                # published again with its reserved start, its header still saying the old eta).
                import datetime as dt
                headers = {**msg.headers, "eta": protocol.to_iso(dt.datetime.fromtimestamp(m.eta, dt.UTC))}
            key = lists.get(m.queue)
            if key is None:
                key = lists[m.queue] = kombu_list(self.kombu_prefix, m.queue, 0)
            kombu.append((m.queue, key, protocol.kombu_envelope(msg, m.queue, 0, headers=headers, delivery_tag=tag)))
        return native, kombu

    def kombu_commands(self, items: list[tuple[str, str, bytes]]) -> list[tuple[Any, ...]]:
        """The commands that put kombu envelopes on kombu's lists and wake idle celeriac
        workers (shared with the asyncio client): one LPUSH per list with all its envelopes
        (the same order as one LPUSH each), in chunks. Many messages are sent as one MULTI/EXEC,
        so a connection lost half-way leaves nothing to push twice on the retry; a single one
        goes as its three commands pipelined without MULTI, its push first (as the asyncio
        client sends it): a wake-up lost with the connection only costs a worker the
        `celery_wire_poll_interval` it looks at kombu's lists after."""
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
        if self._link is not None:
            self._link.transaction(commands)  # MULTI/EXEC on the publish path's own connection
        else:
            transaction(self.client, commands)

    def fetch(self, queues: Sequence[str], worker_id: str, owner: str, limit: int,
              timeout: float, in_flight: int = 0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        if not queues:
            return []
        self._register(queues)
        groups = self._by_slot(queues)
        turn = 0  # on a cluster, which slot's queues a wait blocks on (each in turn)
        found: tuple[list[Delivery], int] | None = None  # what the last wait's fetch brought
        while True:
            got, due_ms = found or self._fetch_once(groups, worker_id, owner, limit)
            if got:
                return got
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            wait = remaining if due_ms < 0 else min(remaining, due_ms / 1000 + 0.001)
            if any(q in self.wire for q in queues):  # a Celery client's LPUSH rings no bell: look again soon
                wait = min(wait, self.wire_poll)
            if len(groups) > 1:  # BLPOP watches one slot: the others are looked at every 50 ms
                wait = min(wait, 0.05)
            found = None
            if wait >= 0.001:
                found = self._wait(groups, turn, wait, worker_id, owner, limit)
                turn += 1

    def _wait(self, groups: list[list[str]], turn: int, seconds: float, worker_id: str, owner: str,
              limit: int) -> tuple[list[Delivery], int] | None:
        """Block until a publisher's token comes (or `seconds` pass). On one plain server the
        fetch is sent behind the BLPOP in the same write: Redis runs it as soon as the BLPOP
        returns, so a woken worker has its messages without a second round trip. -> that
        fetch's (deliveries, due ms), or None when it was not sent or not answered."""
        # Publishers push a token per queue; a token left from earlier only costs a re-check.
        signals = [self._q(q).signal for q in groups[turn % len(groups)]]
        if len(groups) > 1 or self._link is None:  # a cluster, Sentinel, wait_replicas: the plain wait
            guarded(self.url, "wait for messages", functools.partial(self._waiter.wait, signals, seconds))
            return None
        keys, args = self._fetch_call(groups[0], worker_id, owner, limit)
        then = ("EVALSHA", self._fetch.sha, len(keys), *keys, *args)
        _popped, reply = guarded(self.url, "wait for messages",
                                 functools.partial(self._waiter.wait_then, signals, seconds, then))
        return None if reply is None else self._fetched(groups[0], reply, owner)

    def _fetch_once(self, groups: list[list[str]], worker_id: str, owner: str,
                    limit: int) -> tuple[list[Delivery], int]:
        """Lease up to `limit` messages: one script call on a single server. On a cluster, the
        slots whose best ready message is best are asked first, until `limit` is reached, and
        the batch is put in the order one server would give (priority, then position, then
        the order the queues were named in). -> (deliveries, ms until a delayed one is due or -1)"""
        got: list[Delivery] = []
        due_ms = -1
        for group in self._best_first(groups):
            keys, args = self._fetch_call(group, worker_id, owner, limit - len(got))
            batch, due = self._fetched(group, self._run("fetch", self._fetch, args, keys), owner)
            got += batch
            if due >= 0:
                due_ms = due if due_ms < 0 else min(due_ms, due)
            if len(got) >= limit:
                break
        if len(groups) > 1 and got:
            order = {q: i for i, q in enumerate(q for group in groups for q in group)}
            got.sort(key=lambda d: (-d.priority, int(d.tag), order[d.queue]))
        return got, due_ms

    def _fetched(self, group: list[str], reply: Any, owner: str) -> tuple[list[Delivery], int]:
        """A FETCH reply: the leased messages (5 fields each), or [ms until a delayed one is due, or -1]."""
        if len(reply) > 1:
            batch = [Delivery(_text(reply[i]), group[int(reply[i + 1]) - 1], reply[i + 4], int(reply[i + 3]),
                              int(reply[i + 2]), owner) for i in range(0, len(reply), 5)]
            # Deferred ones (a Celery client's future eta) may leave room: look again at once (0).
            return (self._defer_early(owner, batch) if self.wire else batch), 0
        return [], int(reply[0]) if reply and int(reply[0]) >= 0 else -1

    def _best_first(self, groups: list[list[str]]) -> list[list[str]]:
        if len(groups) == 1:
            return groups
        heads = guarded(self.url, "fetch", functools.partial(
            pipelined, self.client, *(("ZRANGE", self._q(q).ready, 0, 0, "WITHSCORES") for g in groups for q in g)))
        scores = iter([float(pairs[0][1]) if pairs else float("inf") for pairs in map(_pairs, heads)])
        best = [min(next(scores) for _ in group) for group in groups]
        return [group for _, _, group in sorted(zip(best, range(len(groups)), groups, strict=True))]

    def _fetch_call(self, queues: list[str], worker_id: str, owner: str, limit: int) -> tuple[list[str], list[Any]]:
        keys = [k for q in queues for k in self._q(q).block()]
        keys += [k for q in queues if q in self.wire for k in kombu_lists(self.kombu_prefix, q)]
        return keys, [worker_id, owner, int(limit), *("1" if q in self.wire else "0" for q in queues)]

    def _register(self, queues: Sequence[str]) -> None:
        """Name the queues in the `queues` set (once per process): recovery looks through those."""
        if time.monotonic() >= self._register_again:  # a Redis that lost the set (restarted empty) gets it back
            self._registered.clear()
            self._register_again = time.monotonic() + 60
        new = [q for q in queues if q not in self._registered]
        if new:
            guarded(self.url, "register queues", functools.partial(self.client.sadd, self.keys.queues, *new))
            self._registered.update(new)

    def _known_queues(self) -> list[str]:
        found = guarded(self.url, "list queues", functools.partial(self.client.smembers, self.keys.queues))
        return sorted(_text(q) for q in found)

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
                later += [d, int(eta * 1000)]
            else:
                due.append(d)
        if later:
            by_queue: dict[str, list[Any]] = {}
            for d, eta_ms in zip(later[::2], later[1::2], strict=True):
                by_queue.setdefault(d.queue, []).extend([d.tag, eta_ms])
            for queue, pairs in by_queue.items():
                self._run("delay messages", self._defer, [owner, *pairs], self._q(queue).block())
        return due

    def upgrade_legacy_layout(self) -> int:
        """What celeriac < 0.2 left in this Redis, moved into this layout (legacy.py); then
        a cheap check every minute (`housekeeping`) picks up what old clients still publish."""
        return self._legacy.upgrade()

    @functools.cached_property
    def _legacy(self) -> LegacyLayout:
        return LegacyLayout(self)

    def housekeeping(self) -> None:
        self._legacy.check()
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
        table, index = kombu_unacked(self.kombu_prefix)
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
        return kombu_list(self.kombu_prefix, queue, step)

    def held_messages(self, worker_id: str) -> list[tuple[str, bytes]] | None:
        out: list[tuple[str, bytes]] = []
        suffix = "\n" + worker_id
        for queue in self._known_queues():
            q = self._q(queue)
            leased = guarded(self.url, "inspect", functools.partial(self.client.hgetall, q.leased))
            mine = [(_text(i), _text(lease)) for i, lease in leased.items() if _text(lease).endswith(suffix)]
            if mine:
                payloads = guarded(self.url, "inspect", functools.partial(
                    self.client.hmget, q.payload, [i for i, _ in mine]))
                out.extend((lease[:-len(suffix)], bytes(p)) for (_, lease), p in zip(mine, payloads, strict=True)
                           if p is not None)
        return out

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        for queue, _owner, ids in self._batches(deliveries):
            self._run("ack", self._ack, ids, self._q(queue).block())

    def release(self, deliveries: Sequence[Delivery]) -> None:
        for queue, owner, ids in self._batches(deliveries):
            self._run("release", self._release, [owner, *ids], self._q(queue).block())

    def _batches(self, deliveries: Sequence[Delivery]) -> list[tuple[str, str, list[str]]]:
        """(queue, owner, ids) per script call: a queue's keys are one hash slot."""
        groups: dict[tuple[str, str], list[str]] = {}
        for d in deliveries:
            groups.setdefault((d.queue, d.owner), []).append(d.tag)
        return [(queue, owner, ids[start:start + _CHUNK]) for (queue, owner), ids in groups.items()
                for start in range(0, len(ids), _CHUNK)]

    def requeue_owner(self, owner: str, running_tag: str | None, keep_all_counts: bool = False) -> int:
        args = [owner, running_tag or "", "1" if keep_all_counts else ""]
        return sum(int(self._run("give back messages", self._requeue_owner, args, self._blocks(group)))
                   for group in self._by_slot(self._known_queues()))

    def _blocks(self, queues: Sequence[str]) -> list[str]:
        return [k for q in queues for k in self._q(q).block()]

    def dead_letter(self, items: Sequence[tuple[Delivery, str]]) -> None:
        groups: dict[str, list[Any]] = {}
        for delivery, reason in items:
            groups.setdefault(delivery.queue, []).extend([delivery.tag, reason])
        for queue, pairs in groups.items():
            self._run("dead-letter", self._dead_letter, [queue, *pairs], self._q(queue).block())

    def schedule_store(self, name: str, publish: Publisher) -> ScheduleStore | None:
        # One script records the ticks and publishes them; on a cluster the queues are in
        # other slots, so the ticks are claimed first and published after (the store's docs).
        return RedisScheduleStore(self.url, self.client, self.keys.prefix, name, publish if self.cluster else None)

    def event_channel(self) -> EventChannel | None:
        channel = RedisEventChannel(self.url, self.client, self.keys.prefix,
                                    int(self.options.get("events_max_len", 10000)))
        if not self.wire:
            return channel
        return MirroredEventChannel(channel, redis_mirror(self.client, self.kombu_prefix))

    def heartbeat(self, worker_id: str, ttl: float, info: dict[str, Any] | None = None) -> None:
        self._run("heartbeat", self._heartbeat, [worker_id, int(ttl * 1000), json.dumps(info or {})],
                  [self.keys.workers, self.keys.workerinfo])

    def unregister(self, worker_id: str) -> int:
        n = self._give_back_workers(self._known_queues(), [worker_id])
        guarded(self.url, "unregister worker", functools.partial(
            pipelined, self.client, ("ZREM", self.keys.workers, worker_id), ("HDEL", self.keys.workerinfo, worker_id)))
        return n

    def _give_back_workers(self, queues: Sequence[str], workers: Sequence[str]) -> int:
        return sum(int(self._run("give back messages", self._give_back, list(workers), self._blocks(group)))
                   for group in self._by_slot(queues))

    def recover(self) -> int:
        """Give back what workers without a lease hold. Holders are read first, then the leases:
        a worker that shows up as a holder registered its lease before it fetched, so one
        without a lease now is gone (its lease expired, or it stopped)."""
        queues = self._known_queues()
        if not queues:
            return 0
        holders = guarded(self.url, "recover messages of dead workers", functools.partial(
            pipelined, self.client, *(("SMEMBERS", self._q(q).holders) for q in queues)))
        candidates = sorted({_text(w) for members in holders for w in members})
        dead = {_text(w) for w in self._run("recover messages of dead workers", self._dead_holders, candidates,
                                             [self.keys.workers, self.keys.workerinfo])}
        if not dead:
            return 0
        n = 0
        for queue, members in zip(queues, holders, strict=True):
            gone = sorted(dead & {_text(w) for w in members})
            if gone:
                n += self._give_back_workers([queue], gone)
        return n

    def purge(self, queues: Sequence[str]) -> int:
        if not queues:
            return 0
        kombu = [key for q in queues if q in self.wire for key in kombu_lists(self.kombu_prefix, q)]
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
        return dropped + sum(int(self._run("purge", self._purge, [], self._q(q).block())) for q in queues)

    def queue_sizes(self, queues: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        if queues is None:
            pattern = self.keys.ready_pattern()
            found = guarded(self.url, "list queues", lambda: list(self.client.scan_iter(match=pattern)))
            queues = sorted({q for k in found if (q := self.keys.queue_of_ready_key(_text(k))) is not None})
        if not queues:
            return {}
        commands = [c for q in queues for c in (("ZCARD", self._q(q).ready), ("HLEN", self._q(q).leased),
                                                 ("ZCARD", self._q(q).delayed))]
        replies = guarded(self.url, "queue sizes", functools.partial(pipelined, self.client, *commands))
        counts = [int(n) for n in replies]
        sizes = {q: {"ready": counts[3 * i], "reserved": counts[3 * i + 1], "delayed": counts[3 * i + 2]}
                 for i, q in enumerate(queues)}
        for queue in (q for q in queues if q in self.wire):  # what still waits in kombu's lists is ready too
            lengths = guarded(self.url, "queue sizes", functools.partial(
                pipelined, self.client, *(("LLEN", key) for key in kombu_lists(self.kombu_prefix, queue))))
            sizes[queue]["ready"] += sum(int(n) for n in lengths)
        return sizes

    def oldest_waiting(self, queues: Sequence[str]) -> dict[str, float]:
        # A ready set is scored (9 - priority) * 1e12 + id: the first member of each priority's
        # band is that priority's oldest. In kombu's lists (queues shared with Celery) the
        # oldest is at the tail.
        bands = [(q, ("ZRANGEBYSCORE", self._q(q).ready, b * _BAND, f"({(b + 1) * _BAND}", "LIMIT", 0, 1))
                 for q in queues for b in range(10)]
        tails = [(q, ("LINDEX", key, -1)) for q in queues if q in self.wire
                 for key in kombu_lists(self.kombu_prefix, q)]

        def read() -> dict[str, list[bytes]]:
            answers = pipelined(self.client, *(cmd for _, cmd in bands + tails))
            heads: dict[str, list[bytes]] = {q: [] for q in queues}
            firsts: dict[str, list[Any]] = {}
            for (q, _), first in zip(bands, answers, strict=False):
                if first:
                    firsts.setdefault(q, []).append(first[0])
            if firsts:
                found = pipelined(self.client, *(("HMGET", self._q(q).payload, *ids) for q, ids in firsts.items()))
                for q, payloads in zip(firsts, found, strict=True):
                    heads[q].extend(p for p in payloads if p)
            for (q, _), tail in zip(tails, answers[len(bands):], strict=True):
                if tail:
                    heads[q].append(tail)
            return heads

        return oldest_of(guarded(self.url, "oldest waiting", read))

    def live_workers(self) -> dict[str, dict[str, Any]]:
        def read() -> dict[str, dict[str, Any]]:
            seconds, micros = self._server_time(self.keys.workers)
            now_ms = seconds * 1000 + micros // 1000
            names = [_text(w) for w in self.client.zrangebyscore(self.keys.workers, now_ms, "+inf")]
            infos = self.client.hmget(self.keys.workerinfo, names) if names else []
            return {n: json.loads(i) if i else {} for n, i in zip(names, infos, strict=True)}

        return guarded(self.url, "list workers", read)

    def _server_time(self, key: str) -> tuple[int, int]:
        """TIME of the server that holds `key` (on a cluster each node has its own clock)."""
        if self.cluster:
            return tuple(self.client.time(target_nodes=self.client.get_node_from_key(key)))
        return tuple(self.client.time())

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
        close_client(self.client)


def _unacked_entry(raw: Any) -> tuple[dict[str, Any] | None, str]:
    """kombu's unacked entry: [message, exchange, routing key] -> (message marked redelivered, queue)."""
    try:
        message, _exchange, queue = json.loads(raw)
        message.setdefault("headers", {})["redelivered"] = True
        message.setdefault("properties", {}).setdefault("delivery_info", {})["redelivered"] = True
        return message, str(queue)
    except (TypeError, ValueError, AttributeError):
        return None, ""  # unreadable: dropped from the index, as kombu drops what it cannot restore


def _no_wire_on_cluster(wire: Any) -> list[str]:
    """kombu has no Redis Cluster transport, so no Celery process can share a queue on a cluster;
    and kombu's list names carry no hash tag, so celeriac could not adopt from them in one
    script either. The default (["celery"]) is dropped quietly, a setting of one's own with a
    warning."""
    if wire and list(wire) != ["celery"]:
        logger.warning("celery_wire_queues=%r is ignored on Redis Cluster: Celery (kombu) cannot use a Redis "
                       "Cluster, so no Celery process can share those queues (docs/redis-topologies.md)", list(wire))
    return []


def _epoch(eta: Any) -> float | None:
    try:
        return protocol.iso_to_epoch(eta) if isinstance(eta, str) else None
    except ValueError:
        return None
