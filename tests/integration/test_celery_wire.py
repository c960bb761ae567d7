"""Celery and celeriac on one wire (docs/celery-interop.md): real Celery 5 clients and workers
(`celery -A ctasks worker -P solo`, in subprocesses) beside celeriac's, on the suite's private
Redis and RabbitMQ. Results live in Redis in both cases (Celery's `celery-task-meta-<id>` keys)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from helpers import INTEGRATION, WorkerProcess, fresh_redis_url, wait_until

pytest.importorskip("celery", reason="the wire tests need real Celery: pip install -e '.[test]'")

CELERY = str(Path(sys.executable).with_name("celery"))


@pytest.fixture(params=["redis", "amqp"])
def wire(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of both sides: one broker, results in Redis; this process is a celeriac client."""
    results = fresh_redis_url(request)
    broker = results
    if request.param == "amqp":
        server = request.getfixturevalue("rabbit_server")
        if not server.ping():
            server.start()
        server.reset()
        broker = server.url
    values = {"CELERIAC_BROKER_URL": broker, "CELERIAC_RESULT_BACKEND": results, "WIRE_BROKER": broker,
              "WIRE_BACKEND": results}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    env = {**os.environ, **values, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(INTEGRATION), os.environ.get("PYTHONPATH", "")])}
    env["WIRE_KIND"] = str(request.param)
    return env


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for proc in started:
        proc.stop()


@pytest.fixture
def celeriac_app(wire: dict[str, str]) -> Iterator[Any]:
    import wire_tasks
    wire_tasks.app._reset_connections()
    yield wire_tasks.app
    wire_tasks.app._reset_connections()


def celeriac_worker(procs: list[WorkerProcess], env: dict[str, str], cwd: Path, *args: str) -> WorkerProcess:
    worker = WorkerProcess(cwd, env, "-c", "2", *args, app="wire_tasks")
    procs.append(worker)
    return worker.wait_ready()


def celery_worker(procs: list[WorkerProcess], env: dict[str, str], cwd: Path) -> WorkerProcess:
    worker = WorkerProcess(cwd, env, "-P", "solo", "--without-gossip", "--without-mingle", "--without-heartbeat",
                           app="ctasks", program=CELERY)
    procs.append(worker)
    return worker.wait_ready(60)


def celery_client(env: dict[str, str], code: str, timeout: float = 90) -> Any:
    """Run `code` in a real Celery client process (ctasks' app as `app`); it leaves its answer in `out`."""
    script = "import json, time\nfrom celery import signature\nfrom ctasks import app\nout = None\n" \
             + textwrap.dedent(code) + "\nprint('OUT=' + json.dumps(out))\n"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    for line in done.stdout.splitlines():
        if line.startswith("OUT="):
            return json.loads(line[4:])
    raise AssertionError(f"the Celery client failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-4000:]}")


# --- 1. a Celery client, a celeriac worker ---

def test_celery_client_to_celeriac_worker(wire: dict[str, str], procs: list[WorkerProcess], tmp_path: Path) -> None:
    worker = celeriac_worker(procs, wire, tmp_path)
    out = celery_client(wire, """
        out = {"add": app.send_task("tasks.add", (2, 3)).get(timeout=20)}
        failing = app.send_task("tasks.fail", ("bad input x",))
        try:
            failing.get(timeout=20)
        except Exception as exc:
            out["raised"] = [type(exc).__module__, type(exc).__name__, str(exc), isinstance(exc, ValueError)]
        out["state"], out["failed"] = failing.state, failing.failed()
        sent = time.time()
        out["ran_after"] = app.send_task("tasks.now", countdown=2).get(timeout=20) - sent
        sent = time.time()  # a countdown shorter than RabbitMQ's delay unit (0.1 s): still never early
        out["short_ran_after"] = app.send_task("tasks.now", countdown=0.06).get(timeout=20) - sent
        chain = (signature("tasks.add", (1, 1)) | signature("tasks.add", (2,))).apply_async()
        out["chain"], out["chain_ids"] = chain.get(timeout=20), [chain.parent.id, chain.id]
        out["parent"] = chain.parent.get(timeout=5)
    """)
    assert out["add"] == 5
    assert out["raised"] == ["builtins", "ValueError", "bad input x", True]
    assert out["state"] == "FAILURE" and out["failed"] is True
    assert out["ran_after"] >= 2.0, out["ran_after"]
    assert out["short_ran_after"] >= 0.06, out["short_ran_after"]
    assert out["chain"] == 4 and out["parent"] == 2
    for task_id in out["chain_ids"]:  # the celeriac worker ran both steps under the ids Celery handed out
        worker.wait_for(rf"tasks\.add\[{task_id}\] succeeded")


def test_celery_group_and_chord_on_celeriac_worker(wire: dict[str, str], procs: list[WorkerProcess],
                                                  tmp_path: Path) -> None:
    celeriac_worker(procs, wire, tmp_path)
    out = celery_client(wire, """
        from celery import chord, group
        out = {"group": group(signature("tasks.add", (i, i)) for i in range(5))().get(timeout=20)}
        body = chord([signature("tasks.add", (i, i)) for i in range(4)], signature("tasks.tsum"))()
        out["chord"] = body.get(timeout=20)
    """)
    assert out == {"group": [0, 2, 4, 6, 8], "chord": 12}


def test_celery_countdown_is_kept_by_the_broker(wire: dict[str, str], procs: list[WorkerProcess],
                                                tmp_path: Path) -> None:
    """A Celery client's countdown taken by a celeriac worker is not held in its memory: the worker
    is killed while it waits, and another one still runs the task, not before its time."""
    first = celeriac_worker(procs, wire, tmp_path)
    sent, task_id = celery_client(wire, "out = [time.time(), app.send_task('tasks.now', countdown=4).id]")
    time.sleep(1.0)  # the first worker has taken it by now (it polls the queue every 0.1 s)
    first.kill()
    celeriac_worker(procs, wire, tmp_path)
    out = celery_client(wire, f"out = app.AsyncResult('{task_id}').get(timeout=30)")
    assert out >= sent + 4.0


def test_celery_message_survives_a_killed_celeriac_worker(wire: dict[str, str], procs: list[WorkerProcess],
                                                          tmp_path: Path) -> None:
    """At-least-once from the moment a celeriac worker takes a Celery client's message."""
    trace = tmp_path / "trace"
    first = celeriac_worker(procs, wire, tmp_path)
    task_id = celery_client(wire, f"out = app.send_task('tasks.slow', ({str(trace)!r}, 3)).id")
    wait_until(lambda: trace.exists() and trace.read_text().count("start") == 1, 20, message="the task started")
    first.kill()
    celeriac_worker(procs, wire, tmp_path)
    assert celery_client(wire, f"out = app.AsyncResult('{task_id}').get(timeout=60)") == "done"
    assert trace.read_text().count("start") == 2  # it ran again on the second worker


def test_celery_poison_message_goes_to_dead_letters(wire: dict[str, str], celeriac_app: Any,
                                                    procs: list[WorkerProcess], tmp_path: Path) -> None:
    from celeriac import protocol
    celeriac_worker(procs, wire, tmp_path)
    out = celery_client(wire, """
        result = app.send_task("tasks.crash")
        try:
            result.get(timeout=60)
        except Exception as exc:
            out = [result.id, result.state, type(exc).__name__]
    """)
    task_id, state, raised = out
    assert (state, raised) == ("FAILURE", "WorkerLostError")
    dead = [protocol.unpack(d.payload).task_id for d in celeriac_app.broker.dead_letters()]
    assert dead == [task_id]


def test_messages_a_dead_celery_worker_held_come_back(wire: dict[str, str], procs: list[WorkerProcess],
                                                     tmp_path: Path) -> None:
    """Redis: a Celery worker killed mid-task leaves the message in kombu's `unacked` hash, which
    only a live Celery worker restores (after visibility_timeout); celeriac workers restore it
    too, so the last Celery worker dying mid-migration does not strand it."""
    if wire["WIRE_KIND"] != "redis":
        pytest.skip("kombu's unacked hash is Redis'; RabbitMQ requeues a dead consumer's messages by itself")
    trace = tmp_path / "trace"
    old = celery_worker(procs, wire, tmp_path)
    ids = celery_client(wire, f"out = [app.send_task('tasks.slow', ({str(trace)!r}, 0.1)).id for _ in range(3)]")
    wait_until(lambda: trace.exists() and "celery-start" in trace.read_text(), 30, message="Celery runs one")
    import redis
    kombu = redis.Redis.from_url(wire["WIRE_BROKER"])
    wait_until(lambda: kombu.hlen("unacked") == 1, 10, message="the running message in kombu's unacked hash")
    old.kill()
    celeriac_worker(procs, dict(wire, WIRE_VISIBILITY_TIMEOUT="2"), tmp_path)
    out = celery_client(wire, f"out = [app.AsyncResult(i).get(timeout=60) for i in {ids!r}]")
    assert out == ["done", "done", "done"]
    ran_here = [line for line in trace.read_text().splitlines() if line.startswith("start ")]
    assert len(ran_here) == 3  # the two waiting ones, and the one the Celery worker died with
    assert kombu.hlen("unacked") == 0 and kombu.zcard("unacked_index") == 0


# --- 2. a celeriac client, a Celery worker ---

def test_celeriac_client_to_celery_worker(wire: dict[str, str], celeriac_app: Any, procs: list[WorkerProcess],
                                          tmp_path: Path) -> None:
    from celeriac import signature
    worker = celery_worker(procs, wire, tmp_path)
    assert celeriac_app.send_task("tasks.mul", (6, 7)).get(timeout=30) == 42
    failing = celeriac_app.send_task("tasks.cfail", ("from Celery",))
    with pytest.raises(ValueError, match="from Celery"):
        failing.get(timeout=30)
    assert failing.failed() and failing.state == "FAILURE"
    steps = (signature("tasks.mul", (2, 3), app=celeriac_app) | signature("tasks.mul", (10,), app=celeriac_app))
    chained = steps.apply_async()
    assert chained.get(timeout=30) == 60
    worker.wait_for(rf"tasks\.mul\[{chained.id}\] succeeded")  # the Celery worker ran the chain's steps
    # A group goes out in bulk (one template, delivery tags made in one go): each member is
    # still a message of its own to the Celery worker, acknowledged by its own tag.
    from celeriac import group
    members = group(signature("tasks.mul", (i, 2), app=celeriac_app) for i in range(40)).apply_async()
    assert members.get(timeout=30) == [i * 2 for i in range(40)]
    sent = time.time()
    result = celeriac_app.send_task("tasks.mul", (2, 3), countdown=1.5)
    assert result.get(timeout=30) == 6
    assert time.time() - sent >= 1.5


# --- 3. RabbitMQ: Celery's plain queue declaration beside celeriac's, in both orders ---

@pytest.mark.parametrize("first", ["celeriac", "celery"])
def test_rabbitmq_declarations_in_either_order(first: str, wire: dict[str, str], celeriac_app: Any,
                                               procs: list[WorkerProcess], tmp_path: Path) -> None:
    if wire["WIRE_KIND"] != "amqp":
        pytest.skip("queue declarations are RabbitMQ's")
    celeriac_send = lambda: celeriac_app.send_task("tasks.add", (20, 22)).id  # noqa: E731
    celery_send = lambda: celery_client(wire, "out = app.send_task('tasks.add', (1, 2)).id")  # noqa: E731
    if first == "celeriac":  # celeriac's worker and client declare first, then Celery's client and worker
        celeriac_worker(procs, wire, tmp_path)
        ids = [celeriac_send(), celery_send()]
        celery_worker(procs, wire, tmp_path)
    else:
        celery_worker(procs, wire, tmp_path)
        ids = [celery_send(), celeriac_send()]
        celeriac_worker(procs, wire, tmp_path)
    ids += [celeriac_send(), celery_send()]  # both declared: both kinds of client keep working
    assert [celeriac_app.AsyncResult(i).get(timeout=30) for i in ids] == (
        [42, 3, 42, 3] if first == "celeriac" else [3, 42, 42, 3])
    for worker in procs:
        assert "PRECONDITION_FAILED" not in worker.output


# --- 6. events: Celery's monitors see celeriac workers ---

MONITOR = """
import json, sys, threading, time
from ctasks import app
state, seen = app.events.State(), []
def on_event(event):
    state.event(event)
    seen.append([event["type"], event.get("hostname"), event.get("uuid")])
def capture():  # one long capture: on Redis events are pub/sub, so a re-subscription would miss some
    with app.connection() as conn:
        app.events.Receiver(conn, handlers={"*": on_event}).capture(limit=None, timeout=None, wakeup=False)
threading.Thread(target=capture, daemon=True).start()
print("LISTENING", flush=True)
deadline = time.time() + 60
while time.time() < deadline:
    time.sleep(0.2)
    if any(t == "task-succeeded" for t, _h, _u in list(seen)) and any(t == "worker-heartbeat" for t, _h, _u in seen):
        time.sleep(0.5)
        break
workers = {name: worker.alive for name, worker in state.workers.items()}
tasks = {uuid: [task.state, task.name] for uuid, task in state.tasks.items()}
print("OUT=" + json.dumps({"seen": seen, "workers": workers, "tasks": tasks}), flush=True)
"""


def monitor_subscribed(wire: dict[str, str]) -> bool:
    """Redis: the monitor's PSUBSCRIBE is in; RabbitMQ: its queue is bound to Celery's exchange."""
    if wire["WIRE_KIND"] == "redis":
        import redis
        return int(redis.Redis.from_url(wire["WIRE_BROKER"]).pubsub_numpat()) > 0
    import pika
    import pika.exceptions
    from celeriac.transports.amqp.broker import AMQPBroker
    conn = pika.BlockingConnection(AMQPBroker._parameters(wire["WIRE_BROKER"], {}))
    try:
        conn.channel().exchange_declare("celeryev", passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        conn.close()


def test_celery_monitor_sees_celeriac_worker_events(wire: dict[str, str], celeriac_app: Any,
                                                     procs: list[WorkerProcess], tmp_path: Path) -> None:
    """What `celery events` and Flower build on (Celery's Receiver and State) sees a celeriac -E worker."""
    monitor = subprocess.Popen([sys.executable, "-c", MONITOR], env=wire, stdout=subprocess.PIPE, text=True)
    try:
        assert monitor.stdout is not None
        assert monitor.stdout.readline().strip() == "LISTENING"
        wait_until(lambda: monitor_subscribed(wire), 20, message="the Celery monitor subscribed")
        celeriac_worker(procs, wire, tmp_path, "-E", "-n", "wire@celeriac")
        task_id = celeriac_app.send_task("tasks.add", (2, 3)).id
        out, _ = monitor.communicate(timeout=90)
    finally:
        if monitor.poll() is None:
            monitor.kill()
    found = json.loads(out.split("OUT=", 1)[1])
    types = {t for t, host, _u in found["seen"] if host == "wire@celeriac"}
    assert {"worker-online", "worker-heartbeat", "task-received", "task-started", "task-succeeded"} <= types, found
    assert found["workers"].get("wire@celeriac") is True, found
    assert found["tasks"][task_id] == ["SUCCESS", "tasks.add"], found


# --- the rolling migration ---

@pytest.mark.slow
@pytest.mark.timeout(400)
def test_rolling_migration_loses_nothing(wire: dict[str, str], procs: list[WorkerProcess], tmp_path: Path) -> None:
    """2,000 tasks from a Celery client while the Celery worker is replaced by a celeriac worker."""
    log = tmp_path / "ran.log"
    log.touch()
    old = celery_worker(procs, wire, tmp_path)
    sender = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from ctasks import app
        for n in range(2000):
            app.send_task("tasks.count", (n, {str(log)!r}), ignore_result=True)
            if n % 50 == 49:
                time.sleep(0.05)
    """)], env=wire)
    ran = lambda: [line.split() for line in log.read_text().splitlines()]  # noqa: E731
    wait_until(lambda: len(ran()) >= 300, 120, message="the Celery worker ran 300 tasks")
    celeriac_worker(procs, wire, tmp_path)
    old.terminate(60)  # Celery's warm shutdown: what it prefetched goes back to the queue
    assert sender.wait(180) == 0
    wait_until(lambda: len({int(n) for _who, n, _pid in ran()}) >= 2000, 180, interval=0.5,
               message="all 2,000 tasks ran")
    rows = ran()
    numbers = {int(n) for _who, n, _pid in rows}
    assert numbers == set(range(2000))
    by = {who for who, _n, _pid in rows}
    assert by == {"celery", "celeriac"}, by
