"""Results read ahead, for a client that reads the results of the tasks it sent.

Such a client usually reads them in the order it sent them (`[r.get() for r in results]`, a
loop over `ready()`), one SELECT per result: a quarter of the CPU a task cost the machine in a
drain (client and server). So the SELECT for one sent task's result also asks for the results
of the next tasks this process sent and has not read yet, and keeps the final ones for a
moment: the next reads find them here. Only final results are kept (a final state does not
change; AsyncResult itself keeps them for good), for AHEAD_TTL seconds, in this process; a
result polled again (not ready yet: the client is ahead of the workers) is read alone.
"""

from __future__ import annotations

import threading
import time
from typing import Iterable, Sequence

READ_AHEAD = 64  # results asked for in one SELECT
AHEAD_TTL = 1.0  # seconds a result read ahead is kept for its reader
SENT_MAX = 20000  # sent task ids remembered (the oldest are dropped)
_SCAN = 4 * READ_AHEAD  # sent ids looked through for the next unread ones


class ReadAhead:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: dict[str, int] = {}  # task id -> its place in the order they were sent
        self.order: dict[int, str] = {}
        self.next = 0  # the place of the next sent id
        self.oldest = 0  # the oldest place still remembered
        self.kept: dict[str, tuple[float, bytes]] = {}  # task id -> (monotonic when read, stored meta)
        self.last_asked: str | None = None

    def note_sent(self, task_ids: Iterable[str]) -> None:
        ids = list(task_ids)
        with self.lock:
            places = range(self.next, self.next + len(ids))
            self.sent.update(zip(ids, places, strict=True))  # a big group's ids in two C loops, not one in Python
            self.order.update(zip(places, ids, strict=True))
            self.next += len(ids)
            while self.next - self.oldest > SENT_MAX:
                dropped = self.order.pop(self.oldest, None)
                if dropped is not None and self.sent.get(dropped) == self.oldest:
                    del self.sent[dropped]
                self.oldest += 1

    def take(self, task_id: str) -> bytes | None:
        """A final result read ahead for this id, if fresh."""
        if not self.kept:
            return None
        with self.lock:
            found = self.kept.pop(task_id, None)
        return found[1] if found is not None and time.monotonic() - found[0] < AHEAD_TTL else None

    def ids_to_read(self, task_id: str) -> list[str]:
        """`task_id`, then the ids sent after it whose results were not read yet."""
        with self.lock:
            polled_again, self.last_asked = task_id == self.last_asked, task_id
            place = self.sent.get(task_id)
            if place is None or polled_again:
                return [task_id]
            ids = [task_id]
            for later in range(place + 1, min(self.next, place + 1 + _SCAN)):
                if len(ids) >= READ_AHEAD:
                    break
                other = self.order.get(later)
                if other is not None and other not in self.kept:
                    ids.append(other)
            return ids

    def read(self, final: Sequence[tuple[str, bytes]], asked: str) -> None:
        """These final results were read: keep the others than `asked` for their readers."""
        now = time.monotonic()
        with self.lock:
            if len(self.kept) > SENT_MAX // 4:  # results read ahead and never asked for
                self.kept = {k: v for k, v in self.kept.items() if now - v[0] < AHEAD_TTL}
            for task_id, meta in final:
                place = self.sent.pop(task_id, None)
                if place is not None:
                    self.order.pop(place, None)
                if task_id != asked:
                    self.kept[task_id] = (now, meta)

    def forget(self, task_ids: Iterable[str]) -> None:
        with self.lock:
            for task_id in task_ids:
                self.kept.pop(task_id, None)
