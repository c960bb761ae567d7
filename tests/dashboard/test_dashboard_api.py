"""The dashboard's API and /metrics against real workers, on every broker."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("starlette")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from celeriac import AsyncResult  # noqa: E402
from dashboard_helpers import DashboardProcess  # noqa: E402
from helpers import wait_until  # noqa: E402


@pytest.fixture
def start_dashboard(app_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    running: list[DashboardProcess] = []

    def start(*args: str, auth: tuple[str, str] | None = None) -> DashboardProcess:
        dashboard = DashboardProcess(tmp_path, app_env, *args, auth=auth)
        running.append(dashboard)
        return dashboard

    yield start
    for dashboard in running:
        dashboard.stop()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_history_from_before_the_dashboard_and_after_its_restart(tasks: Any, start_worker: Any,
                                                               start_dashboard: Any) -> None:
    worker = start_worker("-c", "2", "-n", "dash1@host")
    ok = [tasks.add.delay(i, 100) for i in range(3)]
    bad = tasks.fail.delay("<b>boom</b>")
    assert [r.get(timeout=20) for r in ok] == [100, 101, 102]
    with pytest.raises(ValueError, match="boom"):
        bad.get(timeout=20)

    dashboard = start_dashboard()  # started after the tasks ran: the history is durable
    # (a record follows its result within the workers' history flush interval, 0.5 s)
    wait_until(lambda: {t["task_id"] for t in dashboard.get("/api/tasks")["tasks"]} >= {r.id for r in ok} | {bad.id},
               10)
    assert [t["task_id"] for t in dashboard.get("/api/tasks", params={"state": "FAILURE"})["tasks"]] == [bad.id]
    by_name = dashboard.get("/api/tasks", params={"name": "tasks_app.add"})["tasks"]
    assert sorted(t["task_id"] for t in by_name) == sorted(r.id for r in ok)
    assert [t["task_id"] for t in dashboard.get("/api/tasks", params={"search": "<b>boom"})["tasks"]] == [bad.id]
    one = dashboard.get(f"/api/tasks/{ok[1].id}")
    assert one["args"] == [1, 100] and one["result"] == 101 and one["state"] == "SUCCESS"
    assert one["worker"] == "dash1@host" and one["received"] <= one["started"] <= one["finished"]
    failed = dashboard.get(f"/api/tasks/{bad.id}")
    assert "boom" in failed["exception"] and "Traceback" in failed["traceback"]

    workers = wait_until(lambda: [w for w in dashboard.get("/api/workers")["workers"] if w["processed"] >= 4], 10)
    assert workers[0]["hostname"] == "dash1@host" and workers[0]["pool"] == "process"
    metrics = samples(dashboard.http.get("/metrics").text)
    assert metrics[("celeriac_tasks_total", (("name", "tasks_app.add"), ("state", "SUCCESS")))] == 3
    assert metrics[("celeriac_tasks_total", (("name", "tasks_app.fail"), ("state", "FAILURE")))] == 1
    assert metrics[("flower_worker_online", (("worker", "dash1@host"),))] == 1
    assert ("celeriac_queue_length", (("queue", "celery"),)) in metrics

    # Retry a finished task with its original arguments: a new task linked to the old one.
    answer = dashboard.post(f"/api/tasks/{ok[2].id}/retry")
    assert answer.status_code == 200, answer.text
    new_id = answer.json()["task_id"]
    assert new_id != ok[2].id and AsyncResult(new_id, app=tasks.app).get(timeout=20) == 102
    # The history record follows its result within the workers' flush interval (0.5 s).
    new = wait_until(lambda: (d := dashboard.http.get(f"/api/tasks/{new_id}").json()).get("args") and d, 10)
    assert new["parent_id"] == ok[2].id and new["args"] == [2, 100] and new["state"] == "SUCCESS"

    dashboard.stop()
    again = start_dashboard()  # a restart loses nothing
    assert {t["task_id"] for t in again.get("/api/tasks")["tasks"]} >= {r.id for r in ok} | {bad.id, new_id}

    worker.kill()  # a dead worker drops out of the page and of the metrics on its own
    wait_until(lambda: not again.get("/api/workers")["workers"], 20)
    assert "flower_worker_online{" not in again.http.get("/metrics").text


def test_queue_and_dead_letter_actions(tasks: Any, start_worker: Any, start_dashboard: Any, broker_kind: str) -> None:
    dashboard = start_dashboard()
    sent = time.time()
    for _ in range(4):
        tasks.routed.apply_async(queue="dashq")
    tasks.add.delay(1, 1)  # on Redis the default queue is shared with Celery: kombu's list
    queues = {q["name"]: q for q in dashboard.get("/api/queues")["queues"]}
    if broker_kind != "amqp":  # RabbitMQ cannot list queues it was not told about
        assert queues["dashq"]["ready"] == 4
        for name in ("dashq", "celery"):  # the age of the oldest waiting message, from its send time
            assert 0 <= queues[name]["oldest_age"] <= time.time() - sent + 0.01, queues[name]
        ages = samples(dashboard.http.get("/metrics").text)
        assert 0 <= ages[("celeriac_queue_oldest_age_seconds", (("queue", "dashq"),))] < 60
    else:  # RabbitMQ cannot tell without taking the message
        assert queues["celery"]["oldest_age"] is None
    answer = dashboard.post("/api/queues/dashq/purge")
    assert answer.status_code == 200 and answer.json()["removed"] == 4
    metrics = samples(dashboard.http.get("/metrics").text)
    assert metrics.get(("celeriac_queue_length", (("queue", "dashq"),)), 0) == 0

    start_worker("-n", "dash2@host")
    rejected = tasks.rejects.delay()
    letters = wait_until(lambda: [d for d in dashboard.get("/api/dead-letters")["dead_letters"]
                                  if d["task_id"] == rejected.id], 20)
    assert "rejected by the task" in letters[0]["reason"]
    metrics = samples(dashboard.http.get("/metrics").text)
    assert metrics[("celeriac_dead_letters", (("queue", "celery"),))] >= 1
    answer = dashboard.post("/api/dead-letters/requeue", {"ids": [letters[0]["id"]]})
    assert answer.status_code == 200 and answer.json()["requeued"] == 1

    answer = dashboard.post("/api/rate-limit", {"task": "tasks_app.add", "rate": "5/s"})
    assert answer.status_code == 200 and answer.json()["replies"], answer.text
    slow = tasks.sleepy.delay(30)
    wait_until(lambda: dashboard.get("/api/workers")["workers"][0]["active"] == 1, 20)
    answer = dashboard.post(f"/api/tasks/{slow.id}/revoke", {"terminate": True})
    assert answer.status_code == 200
    assert wait_until(lambda: slow.state == "REVOKED", 20)
