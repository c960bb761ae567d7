"""Moving what celeriac < 0.2 left in Redis into today's key layout (docs/redis.md, "Upgrading").

The old layout kept every queue's messages in shared hashes (`<prefix>:payload`, `:route`
"priority:queue", `:deliveries`), ready messages in `<prefix>:ready:<queue>`, delayed ones in
`<prefix>:delayed`, leased ones in `<prefix>:held:<owner>` (found through `:holders` and
`:owners:<worker>`), dead letters in `<prefix>:dead*`; results in `<prefix>:r:<id>` and
`<prefix>:done:<id>`, chords in `<prefix>:chord:<group id>`, beat in `<prefix>:beat:<name>:*`,
revocations in `<prefix>:revoked`. A worker of this version moves them at its start, and every
minute while any old message is left (old clients may still publish during a rolling upgrade).

Each script call moves one batch atomically: a message is in one layout or the other, never
both or neither, so a worker killed mid-way leaves a state the next start simply continues.
The old layout's `payload` hash is the proof of ownership: an id whose payload is gone was
already moved (or acked), and its leftover references are only dropped. The old layout never
existed on Redis Cluster, so there the whole step is a no-op.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Iterable

from .client import Script, guarded, pipelined
from .keys import Keys, _glob_escape
from . import scripts as lua

if TYPE_CHECKING:
    from .broker import RedisBroker

logger = logging.getLogger("celeriac.worker")

BATCH = 500  # messages per script call: each call is short, Redis stays responsive
CHECK_EVERY = 60.0  # default seconds between the cheap "anything old left?" checks of a running worker
OLD_VERSION = "celeriac < 0.2"

# KEYS: old payload, route, deliveries, workers, the source (a ready zset, the delayed zset or
# a held hash), then queue blocks (13 keys each). ARGV: kind ('ready', 'delayed', 'held'), then
# (id, block number or 0 when its queue is unknown) pairs, in the order to keep.
# A held message moves only when its old worker's lease has expired (a live old worker acks it
# itself); it becomes ready with its delivery count (at-least-once, as after a crash).
# Returns {ids settled (moved or stale reference dropped), moved into block 1, block 2, ...}.
MOVE_MESSAGES = lua.COMMON + """
local payload_k, route_k, deliveries_k, workers_k, source = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local kind = ARGV[1]
local settled, moved, qs = 0, {}, {}
for k = 1, (#KEYS - 5) / 13 do moved[k] = 0 end
for i = 2, #ARGV, 2 do
  local id, k = ARGV[i], tonumber(ARGV[i + 1])
  local here
  if kind == 'held' then
    here = redis.call('HGET', source, id)
    if here then
      local lease = redis.call('ZSCORE', workers_k, here)
      if lease and tonumber(lease) > now then here = false end
    end
  else
    here = redis.call('ZSCORE', source, id)
  end
  if here then
    local payload = redis.call('HGET', payload_k, id)
    if payload and k > 0 then
      local route = redis.call('HGET', route_k, id)
      local prio = 0
      if route then prio = tonumber(string.sub(route, 1, string.find(route, ':', 1, true) - 1)) or 0 end
      local q = qs[k]
      if not q then
        q = Q(6 + (k - 1) * 13)
        qs[k] = q
      end
      local count = tonumber(redis.call('HGET', deliveries_k, id) or '0')
      local new = redis.call('INCR', q.seq)
      redis.call('HSET', q.payload, new, payload)
      redis.call('HSET', q.prio, new, prio)
      if count > 0 then redis.call('HSET', q.deliveries, new, count) end
      if kind == 'delayed' then
        redis.call('ZADD', q.delayed, tonumber(here), new)
      else
        redis.call('ZADD', q.ready, (9 - prio) * 1e12 + new, new)
      end
      moved[k] = moved[k] + 1
    end
    if not payload or k > 0 then
      redis.call('HDEL', payload_k, id)
      redis.call('HDEL', route_k, id)
      redis.call('HDEL', deliveries_k, id)
      if kind == 'held' then redis.call('HDEL', source, id) else redis.call('ZREM', source, id) end
      settled = settled + 1
    end
  end
end
for k, q in pairs(qs) do
  if moved[k] > 0 then wake(q, moved[k]) end
end
local out = {settled}
for k = 1, #moved do out[k + 1] = moved[k] end
return out
"""

# KEYS: old dead, dead:payload, dead:info, then queue blocks. ARGV: (dead id, block) pairs.
# A dead letter keeps its time, reason and delivery count; it gets a number in its queue.
MOVE_DEAD = lua.COMMON + """
local n = 0
for i = 1, #ARGV, 2 do
  local dead, q = ARGV[i], Q(4 + (tonumber(ARGV[i + 1]) - 1) * 13)
  local at = redis.call('ZSCORE', KEYS[1], dead)
  local payload = redis.call('HGET', KEYS[2], dead)
  if at and payload then
    local num = redis.call('INCR', q.dead_seq)
    redis.call('HSET', q.dead_payload, num, payload)
    redis.call('HSET', q.dead_info, num, redis.call('HGET', KEYS[3], dead) or '{}')
    redis.call('ZADD', q.dead, at, num)
    n = n + 1
  end
  redis.call('ZREM', KEYS[1], dead)
  redis.call('HDEL', KEYS[2], dead)
  redis.call('HDEL', KEYS[3], dead)
end
return n
"""

# KEYS: old result hash, old done list, new result hash, new done list. A result the new
# layout already has (written since) wins; otherwise the old keys are renamed (TTL kept).
MOVE_RESULT = """
if redis.call('EXISTS', KEYS[3]) == 1 or redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 0
end
local n = 0
for i = 1, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('RENAME', KEYS[i], KEYS[i + 2])
    n = 1
  end
end
return n
"""

# KEYS: old chord state, old parts, new state, new parts. A chord whose header was half done at
# the upgrade goes on counting in the new keys; if new header members already finished there,
# the two are merged (members by header index, so none counts twice).
MOVE_CHORD = """
if redis.call('EXISTS', KEYS[3]) == 0 and redis.call('EXISTS', KEYS[4]) == 0 then
  for i = 1, 2 do
    if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('RENAME', KEYS[i], KEYS[i + 2]) end
  end
  return 1
end
local parts = redis.call('HGETALL', KEYS[2])
for i = 1, #parts, 2 do redis.call('HSETNX', KEYS[4], parts[i], parts[i + 1]) end
local old = redis.call('HMGET', KEYS[1], 'size', 'added', 'fired')
local new = redis.call('HMGET', KEYS[3], 'size', 'added', 'fired')
local size = math.max(tonumber(old[1] or '0'), tonumber(new[1] or '0'))
redis.call('HSET', KEYS[3], 'done', redis.call('HLEN', KEYS[4]), 'size', size,
  'added', tonumber(old[2] or '0') + tonumber(new[2] or '0'))
if not new[3] and old[3] then redis.call('HSET', KEYS[3], 'fired', old[3]) end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""

# KEYS: old key, new key: renamed unless the new one exists (then the new one wins).
MOVE_KEY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('RENAME', KEYS[1], KEYS[2])
return 1
"""

# KEYS: old revoked, old revoked:exp, new revoked, new revoked:exp, new revoked:seq.
# Members "seq|signal|task id" get numbers after the new log's, so workers reading it from
# their cursor see them; each keeps its expiry.
MOVE_REVOKED = """
local n = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local expires = redis.call('ZSCORE', KEYS[2], member)
  if expires then
    local rest = string.sub(member, string.find(member, '|', 1, true) + 1)
    local seq = redis.call('INCR', KEYS[5])
    redis.call('ZADD', KEYS[3], seq, seq .. '|' .. rest)
    redis.call('ZADD', KEYS[4], expires, seq .. '|' .. rest)
    n = n + 1
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
return n
"""


class LegacyKeys:
    """Key names of celeriac < 0.2 (one set of hashes for every queue)."""

    def __init__(self, prefix: str) -> None:
        p = self.prefix = prefix
        self.payload, self.route, self.deliveries = f"{p}:payload", f"{p}:route", f"{p}:deliveries"
        self.delayed, self.workers, self.holders = f"{p}:delayed", f"{p}:workers", f"{p}:holders"
        self.dead, self.dead_payload, self.dead_info = f"{p}:dead", f"{p}:dead:payload", f"{p}:dead:info"
        self.revoked, self.revoked_exp = f"{p}:revoked", f"{p}:revoked:exp"

    def ready(self, queue: str) -> str:
        return f"{self.prefix}:ready:{queue}"

    def held(self, owner: str) -> str:
        return f"{self.prefix}:held:{owner}"

    def owners(self, worker: str) -> str:
        return f"{self.prefix}:owners:{worker}"


class LegacyLayout:
    """Moves the old layout's content into the broker's (one instance per RedisBroker)."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self.client = broker.client
        self.old = LegacyKeys(broker.keys.prefix)
        self._move = Script(self.client, MOVE_MESSAGES)
        self._move_dead = Script(self.client, MOVE_DEAD)
        self._started = False
        self._next_check = 0.0
        self.check_every = float(broker.options.get("legacy_layout_check_interval", CHECK_EVERY))

    def _run(self, what: str, fn: Any, *args: Any) -> Any:
        return guarded(self.broker.url, what, functools.partial(fn, *args))

    def left(self) -> bool:
        """One cheap call: does any old message or dead letter remain?"""
        return bool(self._run("look for the old key layout", self.client.exists, self.old.payload,
                              self.old.dead_payload))

    def upgrade(self) -> int:
        """The full step (a worker's start): messages, dead letters, results, chords, beat,
        revocations. Returns the messages and dead letters moved."""
        if self.broker.cluster:
            return 0
        self._started = True
        self._next_check = time.monotonic() + self.check_every
        found = scan_old_keys(self.client, self.broker.url, self.old.prefix)
        moved = self._messages(found["ready"] | set(self.broker._known_queues()))
        move_store_keys(self.client, self.broker.url, self.broker.keys, self.broker.cluster, found, beat_only=True)
        return moved

    def check(self) -> int:
        """The periodic step (every `legacy_layout_check_interval` seconds, a minute by default):
        if anything old is left, move the messages of the queues this version's workers know (no
        key-space scan: old clients publishing during a rolling upgrade are picked up)."""
        if self.broker.cluster or not self._started or time.monotonic() < self._next_check:
            return 0
        self._next_check = time.monotonic() + self.check_every
        if not self.left():
            return 0
        return self._messages(set(self.broker._known_queues()))

    def _messages(self, ready_queues: Iterable[str]) -> int:
        counts: dict[str, int] = {}
        for queue in sorted(ready_queues):
            while True:
                ids = self._ids(("ZRANGE", self.old.ready(queue), 0, BATCH - 1))
                if not ids or not self._move_batch("ready", self.old.ready(queue), [(i, queue) for i in ids], counts):
                    break
        while True:
            ids = self._ids(("ZRANGE", self.old.delayed, 0, BATCH - 1))
            if not ids or not self._move_batch("delayed", self.old.delayed, self._routed(ids), counts):
                break
        self._held(counts)
        dead = self._dead_letters()
        for queue, n in sorted(counts.items()):
            if n:
                logger.warning("moved %d message(s) of queue %r from the Redis key layout of %s into this "
                               "version's", n, queue, OLD_VERSION)
        return sum(counts.values()) + dead

    def _ids(self, command: tuple[Any, ...]) -> list[str]:
        return [_text(i) for i in self._run("read the old key layout", pipelined, self.client, command)[0]]

    def _routed(self, ids: list[str]) -> list[tuple[str, str | None]]:
        """(id, queue) with the queue from the old `route` hash (None: unknown, left alone)."""
        routes = self._run("read the old key layout", self.client.hmget, self.old.route, ids)
        return [(i, _text(r).partition(":")[2] if r else None) for i, r in zip(ids, routes, strict=True)]

    def _held(self, counts: dict[str, int]) -> None:
        """Messages leased by old workers whose lease expired: ready again, counts kept."""
        workers = sorted(_text(w) for w in self._run("read the old key layout", self.client.smembers,
                                                    self.old.holders))
        for worker in workers:
            owners = self._run("read the old key layout", self.client.smembers, self.old.owners(worker))
            for owner in sorted(_text(o) for o in owners):
                held = self.old.held(owner)
                ids = sorted(_text(i) for i in self._run("read the old key layout", self.client.hkeys, held))
                for start in range(0, len(ids), BATCH):
                    self._move_batch("held", held, self._routed(ids[start:start + BATCH]), counts)

    def _move_batch(self, kind: str, source: str, items: list[tuple[str, str | None]],
                    counts: dict[str, int]) -> bool:
        """One atomic script call; False when it settled nothing (the rest is not ours to move)."""
        blocks: dict[str, int] = {}
        args: list[Any] = [kind]
        for msg_id, queue in items:
            block = 0 if queue is None else blocks.setdefault(queue, len(blocks) + 1)
            args += [msg_id, block]
        keys = [self.old.payload, self.old.route, self.old.deliveries, self.old.workers, source]
        keys += [k for q in blocks for k in self.broker._q(q).block()]
        reply = self.broker._run("move messages from the old key layout", self._move, args, keys)
        for queue, block in blocks.items():
            counts[queue] = counts.get(queue, 0) + int(reply[block])
        return int(reply[0]) > 0

    def _dead_letters(self) -> int:
        moved = 0
        while True:
            ids = self._ids(("ZRANGE", self.old.dead, 0, BATCH - 1))
            if not ids:
                return moved
            infos = self._run("read the old key layout", self.client.hmget, self.old.dead_info, ids)
            blocks: dict[str, int] = {}
            args: list[Any] = []
            for dead_id, info in zip(ids, infos, strict=True):
                queue = _dead_queue(info)
                args += [dead_id, blocks.setdefault(queue, len(blocks) + 1)]
            keys = [self.old.dead, self.old.dead_payload, self.old.dead_info]
            keys += [k for q in blocks for k in self.broker._q(q).block()]
            n = int(self.broker._run("move dead letters from the old key layout", self._move_dead, args, keys))
            moved += n
            if n:
                logger.warning("moved %d dead letter(s) from the Redis key layout of %s into this version's", n,
                               OLD_VERSION)


def scan_old_keys(client: Any, url: str, prefix: str) -> dict[str, set[str]]:
    """One SCAN pass for the old layout's per-queue, per-task, per-chord and per-schedule keys:
    {"ready": queues, "r": task ids, "done": task ids, "chord": group ids, "beat": "<name>:<part>"}.
    The pattern `<prefix>:[rdcb]*` leaves out the new layout's result keys (`<prefix>:{<id>}:r`),
    the bulk of a busy server; the new layout's few chord and beat keys ("{" after the kind)
    are told apart here."""
    pattern = f"{_glob_escape(prefix)}:[rdcb]*"
    found: dict[str, set[str]] = {"ready": set(), "r": set(), "done": set(), "chord": set(), "beat": set()}
    keys = guarded(url, "scan for the old key layout", lambda: list(client.scan_iter(match=pattern, count=1000)))
    for key in keys:
        kind, _, rest = _text(key)[len(prefix) + 1:].partition(":")
        if kind in found and rest and not rest.startswith("{"):
            found[kind].add(rest.removesuffix(":parts") if kind == "chord" else rest)
    return found


def move_store_keys(client: Any, url: str, keys: Keys, cluster: bool, found: dict[str, set[str]] | None = None,
                    beat_only: bool = False) -> int:
    """Results, chord counters, revocations and beat's schedule of the old layout, into the new
    (run by the result store at a worker's start; by the broker for beat's schedule only, which
    a broker keeps when the result store cannot)."""
    # Each key (or a task's or chord's pair) moves in one script call; a key the new layout
    # has already (written since the upgrade) wins. Returns the keys moved.
    if cluster:
        return 0
    old = LegacyKeys(keys.prefix)

    def run(what: str, source: str, args: list[Any], key_list: list[str]) -> int:
        return int(guarded(url, what, functools.partial(Script(client, source), args, key_list)))

    if found is None:
        found = scan_old_keys(client, url, keys.prefix)
    for rest in sorted(found["beat"]):
        name, _, part = rest.rpartition(":")
        if name and part in ("lease", "ticks", "pending"):
            new = dict(zip(("lease", "ticks", "pending"), keys.beat(name), strict=True))[part]
            run("move beat's schedule from the old key layout", MOVE_KEY, [], [f"{old.prefix}:beat:{rest}", new])
    if beat_only:
        return 0
    results = 0
    for task_id in sorted(found["r"] | found["done"]):
        results += run("move a result from the old key layout", MOVE_RESULT, [], [
            f"{old.prefix}:r:{task_id}", f"{old.prefix}:done:{task_id}", keys.result(task_id), keys.done(task_id)])
    groups = sorted(found["chord"])
    for group in groups:
        run("move a chord from the old key layout", MOVE_CHORD, [], [
            f"{old.prefix}:chord:{group}", f"{old.prefix}:chord:{group}:parts", keys.chord(group),
            keys.chord_parts(group)])
    revoked = run("move revocations from the old key layout", MOVE_REVOKED, [], [
        old.revoked, old.revoked_exp, keys.revoked, keys.revoked_exp, keys.revoked_seq])
    if results or groups or revoked:
        logger.warning("moved %d result(s), %d chord counter(s) and %d revocation(s) from the Redis key layout "
                       "of %s into this version's", results, len(groups), revoked, OLD_VERSION)
    return results + len(groups) + revoked


def _dead_queue(info: Any) -> str:
    try:
        queue = json.loads(info).get("queue") if info else None
    except ValueError:
        queue = None
    return str(queue or "celery")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
