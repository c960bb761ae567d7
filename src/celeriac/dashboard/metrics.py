"""GET /metrics: Flower's metric names (existing Grafana dashboards keep working) plus celeriac's own.

Everything is read at scrape time from durable state (live workers, queue sizes, dead
letters, the history's counters) or from the events seen so far, so a worker that went
offline leaves the metrics at the next scrape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from .live import RUNTIME_BUCKETS

if TYPE_CHECKING:
    from .data import DashboardData
    from .live import EventTracker


class DashboardCollector:
    def __init__(self, data: "DashboardData", tracker: "EventTracker") -> None:
        self.data, self.tracker = data, tracker

    def collect(self) -> Iterator[Metric]:
        workers = self.data.workers()  # only live ones: a dead worker leaves every metric
        yield from self._event_metrics({worker["hostname"] for worker in workers})
        yield from self._worker_metrics(workers)
        yield from self._queue_metrics()
        tasks = CounterMetricFamily("celeriac_tasks", "Tasks recorded in the history, by name and state "
                                    "(counted since the result store began)", labels=["name", "state"])
        for (name, state), n in sorted(self.data.counts().items()):
            tasks.add_metric([name, state], n)
        yield tasks

    def _event_metrics(self, live: set[str]) -> Iterator[Metric]:
        """Flower's event-made metrics, for the workers that are alive now."""
        t = self.tracker
        events = CounterMetricFamily("flower_events", "Number of events", labels=["worker", "type", "task"])
        runtime = HistogramMetricFamily("flower_task_runtime_seconds", "Task runtime", labels=["task", "worker"])
        prefetch = GaugeMetricFamily("flower_task_prefetch_time_seconds",
                                     "The time the task spent waiting at the worker to be executed",
                                     labels=["task", "worker"])
        prefetched = GaugeMetricFamily("flower_worker_prefetched_tasks", "Number of tasks of given type prefetched "
                                       "at a worker", labels=["task", "worker"])
        with t.lock:
            for (worker, kind, task), n in sorted(t.events_total.items()):
                if worker in live:
                    events.add_metric([worker, kind, task], n)
            for (task, worker), counts in sorted(t.runtimes.items()):
                if worker not in live:
                    continue
                buckets = [(_bound(b), counts[i]) for i, b in enumerate(RUNTIME_BUCKETS)]
                runtime.add_metric([task, worker], buckets, counts[-1])
            for (task, worker), seconds in sorted(t.prefetch_time.items()):
                if worker in live:
                    prefetch.add_metric([task, worker], seconds)
            per_task: dict[tuple[str, str], int] = {}
            for worker, ids in t.prefetched.items():
                if worker not in live:
                    continue
                for uuid in ids:
                    key = (t._names.get(uuid, ""), worker)
                    per_task[key] = per_task.get(key, 0) + 1
            for (task, worker), n in sorted(per_task.items()):
                prefetched.add_metric([task, worker], n)
        yield from (events, runtime, prefetch, prefetched)

    def _worker_metrics(self, workers: list[dict[str, Any]]) -> Iterator[Metric]:
        online = GaugeMetricFamily("flower_worker_online", "Worker online status", labels=["worker"])
        executing = GaugeMetricFamily("flower_worker_number_of_currently_executing_tasks",
                                      "Number of tasks currently executing at a worker", labels=["worker"])
        for worker in workers:
            online.add_metric([worker["hostname"]], 1)
            executing.add_metric([worker["hostname"]], worker["active"])
        yield from (online, executing)

    def _queue_metrics(self) -> Iterator[Metric]:
        length = GaugeMetricFamily("celeriac_queue_length", "Messages waiting in the queue (ready)", labels=["queue"])
        delayed = GaugeMetricFamily("celeriac_queue_delayed", "Delayed (countdown/ETA) messages of the queue",
                                    labels=["queue"])
        age = GaugeMetricFamily("celeriac_queue_oldest_age_seconds", "Age of the oldest waiting message",
                                labels=["queue"])
        dead = GaugeMetricFamily("celeriac_dead_letters", "Messages in the dead-letter queue, by their queue",
                                 labels=["queue"])
        for queue in self.data.queues():
            length.add_metric([queue["name"]], queue["ready"])
            if queue["delayed"] >= 0:
                delayed.add_metric([queue["name"]], queue["delayed"])
            if queue["oldest_age"] is not None:
                age.add_metric([queue["name"]], queue["oldest_age"])
            dead.add_metric([queue["name"]], queue["dead"])
        yield from (length, delayed, age, dead)


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def registry_for(data: "DashboardData", tracker: "EventTracker") -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DashboardCollector(data, tracker))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    out: Any = generate_latest(registry)
    return bytes(out)
