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

from .base import Broker, DeadLetter, Delivery, Outgoing, clamp_priority


class _State:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.ready: dict[str, list[tuple[int, int, str, bytes, int]]] = {}
        self.delayed: list[tuple[float, int, str, int, bytes]] = []
        self.leased: dict[str, tuple[str, str, Delivery]] = {}  # tag -> (worker, owner, delivery)
        self.workers: dict[str, tuple[float, dict[str, Any]]] = {}
        self.dead: list[DeadLetter] = []
        self.seq = itertools.count(1)


_STATES: dict[str, _State] = {}
_STATES_LOCK = threading.Lock()


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

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._s.cond:
            return list(reversed(self._s.dead))[:limit]

    def requeue_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        with self._s.cond:
            chosen = [d for d in self._s.dead if ids is None or d.id in ids]
            self._s.dead = [d for d in self._s.dead if d not in chosen]
            for d in chosen:
                self._push(d.queue, 0, d.payload)
            self._s.cond.notify_all()
            return len(chosen)

    def live_workers(self) -> dict[str, dict[str, Any]]:
        now = time.time()
        with self._s.cond:
            return {w: info for w, (exp, info) in self._s.workers.items() if exp >= now}
