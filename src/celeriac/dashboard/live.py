"""Events as they happen (workers started with -E): per-task timelines for the task page, and the
counters and histograms Flower's metrics are made of. Without -E this stays empty and the
dashboard shows the history record's times instead.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..app import Celeriac

logger = logging.getLogger("celeriac.dashboard")

RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, float("inf"))
KEEP_TASKS = 10_000  # timelines kept in memory (the durable history keeps the rest)


class EventTracker:
    def __init__(self, app: "Celeriac") -> None:
        self.app = app
        self.lock = threading.Lock()
        self.version = 0  # bumped on every event: the live pages' signal to refresh
        self.events_total: collections.Counter[tuple[str, str, str]] = collections.Counter()  # worker, type, task
        self.runtimes: dict[tuple[str, str], list[float]] = {}  # (task, worker) -> bucket counts + [sum]
        self.prefetch_time: dict[tuple[str, str], float] = {}  # (task, worker) -> last received->started
        self.prefetched: dict[str, set[str]] = {}  # worker -> received, not started
        self._timelines: collections.OrderedDict[str, list[dict[str, Any]]] = collections.OrderedDict()
        self._names: dict[str, str] = {}
        self._received: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dashboard-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                receiver = self.app.events.Receiver()
                for event in receiver.itercapture(timeout=None, poll=0.5):
                    self.record(event)
                    if self._stop.is_set():
                        return
            except Exception as exc:  # the dashboard keeps serving the durable state meanwhile
                logger.warning("cannot read task events (%s); retrying in 2s", exc)
                self._stop.wait(2.0)

    def record(self, event: dict[str, Any]) -> None:
        kind = str(event.get("type", ""))
        worker = str(event.get("hostname") or "")
        uuid = str(event.get("uuid") or "")
        with self.lock:
            self.version += 1
            if kind == "worker-offline":
                self._forget_worker(worker)
            if not kind.startswith("task-"):
                return
            if event.get("name"):
                self._names[uuid] = str(event["name"])
            name = self._names.get(uuid, "")
            self.events_total[(worker, kind, name)] += 1
            timeline = self._timelines.get(uuid)
            if timeline is None:
                timeline = self._timelines[uuid] = []
                while len(self._timelines) > KEEP_TASKS:
                    gone, _ = self._timelines.popitem(last=False)
                    self._names.pop(gone, None)
                    self._received.pop(gone, None)
            timeline.append(event)
            self._count(kind, uuid, name, worker, event)

    def _count(self, kind: str, uuid: str, name: str, worker: str, event: dict[str, Any]) -> None:
        at = float(event.get("timestamp") or time.time())
        if kind == "task-received":
            self._received[uuid] = at
            self.prefetched.setdefault(worker, set()).add(uuid)
        elif kind == "task-started":
            self.prefetched.get(worker, set()).discard(uuid)
            received = self._received.pop(uuid, None)
            if received is not None:
                self.prefetch_time[(name, worker)] = max(0.0, at - received)
        elif kind in ("task-succeeded", "task-failed") and event.get("runtime") is not None:
            runtime = float(event["runtime"])
            buckets = self.runtimes.setdefault((name, worker), [0.0] * (len(RUNTIME_BUCKETS) + 1))
            for i, bound in enumerate(RUNTIME_BUCKETS):
                if runtime <= bound:
                    buckets[i] += 1
            buckets[-1] += runtime
        if kind in ("task-revoked", "task-rejected", "task-succeeded", "task-failed"):
            self.prefetched.get(worker, set()).discard(uuid)

    def _forget_worker(self, worker: str) -> None:
        """A worker that said goodbye leaves the event metrics (one killed without a word is
        left out by the scrape, which shows live workers only)."""
        for key in [k for k in self.events_total if k[0] == worker]:
            del self.events_total[key]
        for table in (self.runtimes, self.prefetch_time):
            for pair in [k for k in table if k[1] == worker]:
                del table[pair]
        self.prefetched.pop(worker, None)

    def timeline(self, task_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self._timelines.get(task_id, []))
