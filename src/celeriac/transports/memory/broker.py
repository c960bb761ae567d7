"""In-process broker for unit tests: the same guarantees as the others, in one process.

`memory://name` brokers with the same name share their queues, so an app and a worker
thread in one test see the same messages.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Any, Sequence

from ...protocol import priority_of
from ...brokers.base import (Broker, DeadLetter, Delivery, EventChannel, EventSubscription, LeaseState, Outgoing,
                             Publisher, ScheduleStore, Tick, clamp_priority, oldest_of)


class _State:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.ready: dict[str, list[tuple[int, int, str, bytes, int]]] = {}
        self.delayed: list[tuple[float, int, str, int, bytes]] = []
        self.leased: dict[str, tuple[str, str, Delivery]] = {}  # tag -> (worker, owner, delivery)
        self.workers: dict[str, tuple[float, dict[str, Any]]] = {}
        self.dead: list[DeadLetter] = []
        self.seq = itertools.count(1)
        self.beat_leases: dict[str, tuple[str | None, int, float]] = {}  # name -> holder, token, expires
        self.beat_ticks: dict[str, dict[str, float]] = {}
        self.events: list[bytes] = []
        self.events_dropped = 0  # trimmed from the front: readers' cursors are absolute


_STATES: dict[str, _State] = {}
_STATES_LOCK = threading.Lock()


class _MemoryScheduleStore(ScheduleStore):
    """Beat's state beside the in-process queues (tests, `worker -B` with the memory broker)."""

    def __init__(self, broker: "MemoryBroker", name: str) -> None:
        self.broker, self.name, self._s = broker, name, broker._s

    def lease(self, holder: str, ttl: float) -> int | None:
        with self._s.cond:
            now = time.time()
            current, token, expires = self._s.beat_leases.get(self.name, (None, 0, 0.0))
            if expires > now and current is not None and current != holder:
                return None
            if not (expires > now and current == holder):
                token += 1
            self._s.beat_leases[self.name] = (holder, token, now + ttl)
            return token

    def release(self, holder: str) -> None:
        with self._s.cond:
            current, token, _ = self._s.beat_leases.get(self.name, (None, 0, 0.0))
            if current == holder:
                self._s.beat_leases[self.name] = (None, token, 0.0)

    def lease_state(self) -> LeaseState:
        holder, token, expires = self._s.beat_leases.get(self.name, (None, 0, 0.0))
        left = expires - time.time()
        return LeaseState(holder if left > 0 else None, token, left)

    def last_ticks(self) -> dict[str, float]:
        with self._s.cond:
            return dict(self._s.beat_ticks.get(self.name, {}))

    def fire(self, holder: str, token: int, ticks: Sequence[Tick]) -> list[str] | None:
        with self._s.cond:
            current, current_token, expires = self._s.beat_leases.get(self.name, (None, 0, 0.0))
            if current != holder or current_token != token or expires <= time.time():
                return None
            last = dict(self._s.beat_ticks.get(self.name, {}))
            fresh = []
            for tick in ticks:  # one after another: a batch may hold several ticks of one entry
                if last.get(tick.entry, float("-inf")) < tick.at:
                    last[tick.entry] = tick.at
                    fresh.append(tick)
            self.broker.publish([t.message for t in fresh if t.message is not None])
            self._s.beat_ticks[self.name] = last
            return [t.entry for t in fresh]


class _MemoryEventChannel(EventChannel):
    MAX_LEN = 10000

    def __init__(self, state: _State) -> None:
        self._s = state

    def send(self, events: Sequence[bytes]) -> None:
        with self._s.cond:
            self._s.events.extend(events)
            excess = len(self._s.events) - self.MAX_LEN
            if excess > 0:
                del self._s.events[:excess]
                self._s.events_dropped += excess
            self._s.cond.notify_all()

    def subscribe(self) -> EventSubscription:
        return _MemoryEventSubscription(self._s)


class _MemoryEventSubscription(EventSubscription):
    def __init__(self, state: _State) -> None:
        self._s = state
        with state.cond:
            self.position = state.events_dropped + len(state.events)  # absolute index of the next event

    def next_batch(self, timeout: float) -> list[bytes]:
        s = self._s
        deadline = time.monotonic() + timeout
        with s.cond:
            while True:
                start = self.position - s.events_dropped
                if start < 0:
                    self.missed += -start
                    start = 0
                if start < len(s.events):
                    out = s.events[start:]
                    self.position = s.events_dropped + len(s.events)
                    return list(out)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                s.cond.wait(remaining)


class MemoryBroker(Broker):
    schemes = ("memory",)

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options)
        name = url.split("://", 1)[1] if "://" in url else ""
        with _STATES_LOCK:
            self._s = _STATES.setdefault(name, _State())

    def _push(self, queue: str, priority: int, payload: bytes, deliveries: int = 0, seq: int | None = None) -> None:
        s = self._s
        heapq.heappush(s.ready.setdefault(queue, []),
                       (-priority, seq if seq is not None else next(s.seq), queue, payload, deliveries))

    def schedule_store(self, name: str, publish: Publisher) -> ScheduleStore | None:
        return _MemoryScheduleStore(self, name)

    def event_channel(self) -> EventChannel | None:
        return _MemoryEventChannel(self._s)

    def publish(self, messages: Sequence[Outgoing]) -> None:
        now = time.time()
        with self._s.cond:
            for m in messages:
                priority = clamp_priority(m.priority)
                if m.eta is not None and m.eta > now:
                    heapq.heappush(self._s.delayed, (m.eta, next(self._s.seq), m.queue, priority, m.payload))
                else:
                    self._push(m.queue, priority, m.payload)
            self._s.cond.notify_all()

    def _move_due(self, now: float) -> None:
        delayed = self._s.delayed
        while delayed and delayed[0][0] <= now:
            _eta, _seq, queue, priority, payload = heapq.heappop(delayed)
            self._push(queue, priority, payload)

    def fetch(self, queues: Sequence[str], worker_id: str, owner: str, limit: int,
              timeout: float, in_flight: int = 0) -> list[Delivery]:
        s = self._s
        deadline = time.monotonic() + timeout
        with s.cond:
            while True:
                self._move_due(time.time())
                out: list[Delivery] = []
                while len(out) < limit:
                    heads = [(h[0][0], h[0][1], q) for q in queues if (h := s.ready.get(q))]
                    if not heads:
                        break
                    _, _, queue = min(heads)
                    neg_prio, seq, queue, payload, deliveries = heapq.heappop(s.ready[queue])
                    d = Delivery(str(seq), queue, payload, deliveries + 1, -neg_prio, owner)
                    s.leased[d.tag] = (worker_id, owner, d)
                    out.append(d)
                if out:
                    return out
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                if s.delayed:
                    remaining = min(remaining, max(0.0, s.delayed[0][0] - time.time()) + 0.0005)
                s.cond.wait(remaining)

    def _give_back(self, d: Delivery, deliveries: int) -> None:
        self._push(d.queue, d.priority, d.payload, deliveries, int(d.tag))

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        with self._s.cond:
            for d in deliveries:
                self._s.leased.pop(d.tag, None)

    def release(self, deliveries: Sequence[Delivery]) -> None:
        with self._s.cond:
            for d in deliveries:
                current = self._s.leased.get(d.tag)
                if current is not None and current[1] == d.owner:  # only the current lease
                    del self._s.leased[d.tag]
                    self._give_back(d, max(0, d.deliveries - 1))
            self._s.cond.notify_all()

    def _requeue_where(self, match: Any, running_tag: str | None = None, keep_all: bool = False) -> int:
        s = self._s
        tags = [tag for tag, (worker, owner, _) in s.leased.items() if match(worker, owner)]
        for tag in tags:
            _w, _o, d = s.leased.pop(tag)
            keep = keep_all or tag == running_tag
            self._give_back(d, d.deliveries if keep else max(0, d.deliveries - 1))
        if tags:
            s.cond.notify_all()
        return len(tags)

    def held_messages(self, worker_id: str) -> list[tuple[str, bytes]] | None:
        with self._s.cond:
            return [(owner, d.payload) for worker, owner, d in self._s.leased.values() if worker == worker_id]

    def requeue_owner(self, owner: str, running_tag: str | None, keep_all_counts: bool = False) -> int:
        with self._s.cond:
            return self._requeue_where(lambda _w, o: o == owner, running_tag, keep_all=keep_all_counts)

    def dead_letter(self, items: Sequence[tuple[Delivery, str]]) -> None:
        now = time.time()
        with self._s.cond:
            for d, reason in items:
                self._s.leased.pop(d.tag, None)
                self._s.dead.append(DeadLetter(str(next(self._s.seq)), d.queue, d.payload, reason, now, d.deliveries))

    def heartbeat(self, worker_id: str, ttl: float, info: dict[str, Any] | None = None) -> None:
        with self._s.cond:
            self._s.workers[worker_id] = (time.time() + ttl, dict(info or {}))

    def unregister(self, worker_id: str) -> int:
        with self._s.cond:
            self._s.workers.pop(worker_id, None)
            return self._requeue_where(lambda w, _o: w == worker_id, keep_all=True)

    def recover(self) -> int:
        now = time.time()
        with self._s.cond:
            live = {w for w, (exp, _) in self._s.workers.items() if exp >= now}
            self._s.workers = {w: v for w, v in self._s.workers.items() if w in live}
            return self._requeue_where(lambda w, _o: w not in live, keep_all=True)

    def purge(self, queues: Sequence[str]) -> int:
        with self._s.cond:
            total = 0
            for q in queues:
                total += len(self._s.ready.pop(q, []))
            before = len(self._s.delayed)
            self._s.delayed = [e for e in self._s.delayed if e[2] not in queues]
            heapq.heapify(self._s.delayed)
            return total + before - len(self._s.delayed)

    def queue_sizes(self, queues: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        with self._s.cond:
            names = set(self._s.ready) | {e[2] for e in self._s.delayed} | {v[2].queue for v in self._s.leased.values()}
            if queues is not None:
                names = set(queues)
            return {q: {"ready": len(self._s.ready.get(q, [])),
                        "reserved": sum(1 for v in self._s.leased.values() if v[2].queue == q),
                        "delayed": sum(1 for e in self._s.delayed if e[2] == q)} for q in names}

    def oldest_waiting(self, queues: Sequence[str]) -> dict[str, float]:
        with self._s.cond:
            return oldest_of({q: [entry[3] for entry in self._s.ready.get(q, [])] for q in queues})

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._s.cond:
            return list(reversed(self._s.dead))[:limit]

    def requeue_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        with self._s.cond:
            chosen = [d for d in self._s.dead if ids is None or d.id in ids]
            self._s.dead = [d for d in self._s.dead if d not in chosen]
            for d in chosen:
                self._push(d.queue, priority_of(d.payload), d.payload)
            self._s.cond.notify_all()
            return len(chosen)

    def live_workers(self) -> dict[str, dict[str, Any]]:
        now = time.time()
        with self._s.cond:
            return {w: info for w, (exp, info) in self._s.workers.items() if exp >= now}
