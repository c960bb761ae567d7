"""The dashboard's API and /metrics against real workers, on every broker."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("starlette")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from celeriac import AsyncResult  # noqa: E402
from dashboard_helpers import DashboardProcess  # noqa: E402
from helpers import WorkerProcess, wait_until  # noqa: E402


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
    assert workers[0]["concurrency"] == 2 and "celery" in workers[0]["queues"]
    assert 0 <= workers[0]["heartbeat_age"] < 30
    assert [w["hostname"] for w in dashboard.get("/api/workers", params={"hostname": "dash1"})["workers"]] \
        == ["dash1@host"]
    assert dashboard.get("/api/workers", params={"queue": "celery"})["total"] == 1
    assert dashboard.get("/api/workers", params={"hostname": "nobody"}) \
        == {"workers": [], "limit": 50, "offset": 0, "total": 0, "more": False}
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
    one = dashboard.get("/api/queues", params={"name": "celery"})
    assert [q["name"] for q in one["queues"]] == ["celery"] and one["total"] == 1
    first = dashboard.get("/api/queues", params={"limit": 1})
    assert len(first["queues"]) == 1 and first["more"] and first["total"] >= 2  # celery and special at least
    second = dashboard.get("/api/queues", params={"limit": 1, "offset": 1})
    assert second["queues"] != first["queues"]
    answer = dashboard.post("/api/queues/dashq/purge")
    assert answer.status_code == 200 and answer.json()["removed"] == 4
    metrics = samples(dashboard.http.get("/metrics").text)
    assert metrics.get(("celeriac_queue_length", (("queue", "dashq"),)), 0) == 0

    start_worker("-n", "dash2@host")
    rejected = tasks.rejects.delay()
    letters = wait_until(lambda: [d for d in dashboard.get("/api/dead-letters")["dead_letters"]
                                  if d["task_id"] == rejected.id], 20)
    assert "rejected by the task" in letters[0]["reason"] and letters[0]["deliveries"] == 1
    by_name = dashboard.get("/api/dead-letters", params={"name": "tasks_app.rejects", "queue": "celery"})
    assert rejected.id in [d["task_id"] for d in by_name["dead_letters"]]
    assert dashboard.get("/api/dead-letters", params={"name": "tasks_app.add"})["dead_letters"] == []
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


def test_events_from_E_workers_links_and_revoke(tasks: Any, start_worker: Any, start_dashboard: Any,
                                                tmp_path: Path) -> None:
    from celeriac import chord

    dashboard = start_dashboard()  # before the worker: it sees the events from the first one
    worker = start_worker("-c", "1", "-E", "-n", "ev1@host")
    ok = [tasks.add.delay(i, 1) for i in range(3)]
    assert [r.get(timeout=20) for r in ok] == [1, 2, 3]
    with pytest.raises(ValueError, match="boom"):
        tasks.fail.delay().get(timeout=20)

    add, on = (("task", "tasks_app.add"), ("worker", "ev1@host")), ("worker", "ev1@host")
    succeeded = ("flower_events_total", (("task", "tasks_app.add"), ("type", "task-succeeded"), on))
    metrics = wait_until(lambda: (m := samples(dashboard.http.get("/metrics").text)).get(succeeded) == 3 and m, 20)
    assert metrics[("flower_events_total", (("task", "tasks_app.fail"), ("type", "task-failed"), on))] == 1
    assert metrics[("flower_events_total", (("task", "tasks_app.add"), ("type", "task-received"), on))] == 3
    assert metrics[("flower_task_runtime_seconds_count", add)] == 3
    assert metrics[("flower_task_runtime_seconds_bucket", (("le", "+Inf"), *add))] == 3
    assert 0 <= metrics[("flower_task_prefetch_time_seconds", add)] < 20
    timeline = [step["event"] for step in dashboard.get(f"/api/tasks/{ok[0].id}")["timeline"]]
    assert timeline == ["task-received", "task-started", "task-succeeded"]  # the events, not the record

    release = tmp_path / "release"
    running = tasks.run_until_released.delay(str(tmp_path / "log"), "x", str(release))
    executing = ("flower_worker_number_of_currently_executing_tasks", (on,))
    wait_until(lambda: samples(dashboard.http.get("/metrics").text).get(executing) == 1, 20)
    release.touch()
    assert running.get(timeout=20) == "x"

    # Where a task leads: its chord body, its callbacks, its children.
    body = chord([tasks.add.s(1, 1), tasks.add.s(2, 2)])(tasks.tsum.s())
    assert body.get(timeout=30) == 6
    header = body.parent
    first = wait_until(lambda: (d := dashboard.http.get(f"/api/tasks/{header.results[0].id}").json()).get("args") and d,
                       10)
    assert first["chord"] == body.id and first["group_id"] == header.id
    follow = tasks.add.s(10).set(task_id="link-0123456789")
    linked = tasks.add.apply_async((1, 1), link=follow)
    assert linked.get(timeout=20) == 2
    assert AsyncResult("link-0123456789", app=tasks.app).get(timeout=20) == 12
    assert wait_until(lambda: dashboard.get(f"/api/tasks/{linked.id}")["callbacks"], 10) == ["link-0123456789"]
    spawner = tasks.spawn_group.delay(2)
    assert spawner.get(timeout=20) == 2
    children = wait_until(lambda: dashboard.get(f"/api/tasks/{spawner.id}")["children"], 10)
    assert len(children) == 2 and sorted(AsyncResult(c, app=tasks.app).get(timeout=20) for c in children) == [0, 2]

    # Revoke (not terminate) a task that waits for its countdown: it never runs.
    later = tasks.add.apply_async((5, 5), countdown=2)
    answer = dashboard.post(f"/api/tasks/{later.id}/revoke", {})
    assert answer.status_code == 200, answer.text
    assert wait_until(lambda: later.state == "REVOKED", 20)

    worker.kill()  # killed without a goodbye: it leaves every metric, the event-made ones too
    wait_until(lambda: "ev1@host" not in dashboard.http.get("/metrics").text, 30)


def test_periodic_page_shows_the_leading_beat_and_its_ticks(tasks: Any, app_env: dict[str, str],
                                                            tmp_path: Path) -> None:
    env = dict(app_env, BEAT_TEST_SCHEDULE=json.dumps({"dash-tick": [1, "skip"]}),
               BEAT_TEST_FILE=str(tmp_path / "ticks.jsonl"), BEAT_TEST_LEASE="2")
    dashboard = DashboardProcess(tmp_path, env)
    try:
        idle = dashboard.get("/api/periodic")
        assert [e["name"] for e in idle["entries"]] == ["dash-tick"]
        assert dashboard.get("/api/periodic", params={"name": "other"})["entries"] == []
        assert idle["leader"] is None and idle["entries"][0]["last"] is None  # no beat has run yet
        beat = WorkerProcess(tmp_path, env, command="beat")
        try:
            beat.wait_for(r"beat \S+: \d+ entr")
            page = wait_until(lambda: (p := dashboard.get("/api/periodic"))["leader"] and p["entries"][0]["last"] and p,
                              20, message="the periodic page naming the leading beat and a tick")
            assert int(page["leader"].split(":")[1]) == beat.proc.pid
            entry = page["entries"][0]
            assert entry["task"] == "tasks_app.record_tick" and entry["schedule"] and entry["missed"] == "skip"
            assert entry["next"] > entry["last"] and 0 <= entry["due_in"] <= 1.0  # both "YYYY-MM-DD hh:mm:ss"
        finally:
            beat.stop()
    finally:
        dashboard.stop()
