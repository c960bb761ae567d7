"""Flower's event-made metrics (workers run with -E): what each counts, and that a worker
that left - saying goodbye or killed - leaves them all."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from celeriac.dashboard.live import EventTracker  # noqa: E402
from celeriac.dashboard.metrics import registry_for, render  # noqa: E402


class FakeData:
    """The durable state the collector reads besides the events: live workers, queues, counts."""

    def __init__(self) -> None:
        self.live = [{"hostname": "w1@h", "active": 1}, {"hostname": "w2@h", "active": 0}]

    def workers(self) -> list[dict[str, Any]]:
        return list(self.live)

    def queues(self) -> list[dict[str, Any]]:
        return []

    def counts(self) -> dict[tuple[str, str], int]:
        return {}


def scrape(data: FakeData, tracker: EventTracker) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(render(registry_for(data, tracker)).decode()):  # type: ignore[arg-type]
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def events(tracker: EventTracker, worker: str, *items: tuple[str, str, float, dict[str, Any]]) -> None:
    for kind, uuid, at, extra in items:
        tracker.record({"type": kind, "hostname": worker, "uuid": uuid, "timestamp": at, **extra})


def test_event_metrics_count_what_flower_counts() -> None:
    tracker, data = EventTracker(app=None), FakeData()  # type: ignore[arg-type]
    events(tracker, "w1@h",
           ("task-received", "a", 100.0, {"name": "t.add"}), ("task-started", "a", 100.25, {}),
           ("task-succeeded", "a", 100.5, {"runtime": 0.02}),
           ("task-received", "b", 101.0, {"name": "t.add"}), ("task-started", "b", 101.5, {}),
           ("task-failed", "b", 102.0, {"runtime": 3.0}),
           ("task-received", "c", 103.0, {"name": "t.add"}), ("task-received", "d", 103.0, {"name": "t.mul"}))
    m = scrape(data, tracker)
    assert m[("flower_events_total", (("task", "t.add"), ("type", "task-received"), ("worker", "w1@h")))] == 3
    assert m[("flower_events_total", (("task", "t.add"), ("type", "task-succeeded"), ("worker", "w1@h")))] == 1
    assert m[("flower_events_total", (("task", "t.add"), ("type", "task-failed"), ("worker", "w1@h")))] == 1
    runtime = (("task", "t.add"), ("worker", "w1@h"))
    assert m[("flower_task_runtime_seconds_count", runtime)] == 2
    assert m[("flower_task_runtime_seconds_sum", runtime)] == pytest.approx(3.02)
    assert m[("flower_task_runtime_seconds_bucket", (("le", "0.025"), *runtime))] == 1
    assert m[("flower_task_runtime_seconds_bucket", (("le", "5.0"), *runtime))] == 2
    assert m[("flower_task_prefetch_time_seconds", runtime)] == pytest.approx(0.5)  # the latest: b's
    assert m[("flower_worker_prefetched_tasks", runtime)] == 1  # c: received, not started
    assert m[("flower_worker_prefetched_tasks", (("task", "t.mul"), ("worker", "w1@h")))] == 1
    assert m[("flower_worker_number_of_currently_executing_tasks", (("worker", "w1@h"),))] == 1


def test_a_worker_that_left_leaves_every_metric() -> None:
    tracker, data = EventTracker(app=None), FakeData()  # type: ignore[arg-type]
    for worker in ("w1@h", "w2@h"):
        events(tracker, worker, ("task-received", f"{worker}-a", 1.0, {"name": "t.add"}),
               ("task-started", f"{worker}-a", 1.5, {}), ("task-succeeded", f"{worker}-a", 2.0, {"runtime": 0.5}),
               ("task-received", f"{worker}-b", 2.0, {"name": "t.add"}))
    before = {labels for _name, labels in scrape(data, tracker)}
    assert any(("worker", "w2@h") in labels for labels in before)

    data.live = [w for w in data.live if w["hostname"] != "w2@h"]  # killed: gone from the live list
    after = scrape(data, tracker)
    assert not [key for key in after if ("worker", "w2@h") in key[1]]
    assert after[("flower_events_total", (("task", "t.add"), ("type", "task-succeeded"), ("worker", "w1@h")))] == 1

    tracker.record({"type": "worker-offline", "hostname": "w1@h"})  # said goodbye: forgotten, memory too
    assert not [k for k in tracker.events_total if k[0] == "w1@h"]
    assert "w1@h" not in tracker.prefetched
    assert not [k for k in (*tracker.runtimes, *tracker.prefetch_time) if k[1] == "w1@h"]
