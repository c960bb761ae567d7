"""Reading and requeueing a Redis broker's dead letters (each queue keeps its own, in its hash
slot: the dead set by time, the payloads, and the reason and delivery count). Mixed into
RedisBroker."""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any, Sequence

from ... import protocol
from ...brokers.base import DeadLetter
from .client import guarded, pipelined, reply_text as _text, score_pairs as _pairs

if TYPE_CHECKING:
    from .keys import QueueKeys

_CHUNK = 500  # dead letters per script call: keeps each call short so Redis stays responsive


class DeadLetters:
    """The dead-letter half of RedisBroker, which provides what is declared here."""

    if TYPE_CHECKING:
        url: str
        client: Any
        _requeue_dead: Any

        def _q(self, queue: str) -> QueueKeys: ...

        def _known_queues(self) -> list[str]: ...

        def _run(self, what: str, script: Any, args: list[Any], keys: Sequence[str]) -> Any: ...

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest dead letters of every queue. Their ids say the queue: '<number>@<queue>'."""
        def read() -> list[DeadLetter]:
            queues = self._known_queues()
            tops = pipelined(self.client, *(("ZREVRANGE", self._q(q).dead, 0, limit - 1, "WITHSCORES")
                                             for q in queues)) if queues else []
            newest = sorted(((float(score), int(n), q) for q, top in zip(queues, tops, strict=True)
                             for n, score in _pairs(top)), reverse=True)[:limit]
            fields = pipelined(self.client, *(command for _score, n, queue in newest for command in (
                ("HGET", self._q(queue).dead_payload, n), ("HGET", self._q(queue).dead_info, n)))) if newest else []
            out = []
            for (_score, n, queue), payload, info in zip(newest, fields[::2], fields[1::2], strict=True):
                meta = json.loads(info) if info else {}
                out.append(DeadLetter(f"{n}@{queue}", meta.get("queue", queue), payload or b"", meta.get("reason", ""),
                                      float(meta.get("at", 0)), int(meta.get("deliveries", 0))))
            return out

        return guarded(self.url, "read dead letters", read)

    def requeue_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        if ids is not None and not ids:
            return 0
        by_queue: dict[str, list[str]] = {}
        if ids is None:
            by_queue = {q: [] for q in self._known_queues()}
        else:
            for dead_id in ids:
                n, _, queue = dead_id.partition("@")
                by_queue.setdefault(queue, []).append(n)
        return sum(self._requeue_dead_of(queue, numbers) for queue, numbers in by_queue.items())

    def _requeue_dead_of(self, queue: str, numbers: list[str]) -> int:
        """Put a queue's dead letters (all of them when `numbers` is empty) back, each at the
        priority it was sent with (read from its payload here: the script only moves them)."""
        q = self._q(queue)
        if not numbers:
            numbers = [_text(n) for n in guarded(self.url, "read dead letters",
                                                 functools.partial(self.client.zrange, q.dead, 0, -1))]
        moved = 0
        for start in range(0, len(numbers), _CHUNK):
            chunk = numbers[start:start + _CHUNK]
            payloads = guarded(self.url, "read dead letters",
                               functools.partial(self.client.hmget, q.dead_payload, chunk))
            args = [x for n, p in zip(chunk, payloads, strict=True) for x in (n, protocol.priority_of(p) if p else 0)]
            moved += int(self._run("requeue dead letters", self._requeue_dead, args, q.block()))
        return moved

