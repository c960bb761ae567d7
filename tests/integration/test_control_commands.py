"""Custom remote-control commands (Celery's control_command / inspect_command), Celery's inspect
replies, the request a task sees, and Reject - against real workers, on every broker."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from celeriac import states
from celeriac.exceptions import Reject
from helpers import celeriac_bin, wait_until


@pytest.fixture
def capp(app_env: dict[str, str]) -> Iterator[Any]:
    import control_app
    control_app.app._reset_connections()
    yield control_app
    control_app.app._reset_connections()


def _cli(app_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([celeriac_bin(), "-A", "control_app", *args], env=app_env, capture_output=True,
                          text=True, timeout=60)


def test_custom_commands_from_python_and_the_cli(capp: Any, start_worker: Any, app_env: dict[str, str]) -> None:
    start_worker("-c", "2", "-n", "a@host", "--prefetch-multiplier", "4", app="control_app")
    control = capp.app.control
    inspect = control.inspect(timeout=3.0)

    # The workers guide's example commands, verbatim: 2 slots x 4 = 8, then 3 more.
    assert inspect._request("current_prefetch_count") == {"a@host": {"prefetch_count": 8}}
    assert control.broadcast("increase_prefetch_count", arguments={"n": 3}, reply=True, destination=["a@host"],
                             timeout=3.0) == [{"a@host": {"ok": "prefetch count incremented"}}]
    assert inspect._request("current_prefetch_count") == {"a@host": {"prefetch_count": 11}}
    assert inspect.stats()["a@host"]["prefetch_count"] == 11
    # One worker named as a string: its answer alone, as in Celery.
    assert control.inspect("a@host", timeout=3.0).ping() == {"ok": "pong"}
    # Not for this worker: nobody answers.
    assert control.broadcast("current_prefetch_count", reply=True, destination=["nobody@host"], timeout=0.5) == []

    # What `state` offers a handler; arguments by keyword; a reply JSON cannot carry is converted.
    echoed = inspect._request("echo_state", word="hi", more=["x"], flag=True)["a@host"]
    assert echoed == {"word": "hi", "more": ["x"], "extra": {"flag": True}, "hostname": "a@host",
                      "consumer_hostname": "a@host", "app": "control_app", "same_app": True, "pool": 2,
                      "concurrency": 2, "queues": ["celery"], "seen": [1, 2]}

    # A handler that raises: an error reply naming it; the worker keeps answering.
    reply = control.broadcast("broken", reply=True, timeout=3.0)
    assert reply == [{"a@host": {"error": "broken: RuntimeError('handler failed on purpose')"}}]
    assert inspect.ping() == {"a@host": {"ok": "pong"}}
    assert capp.add.delay(2, 3).get(timeout=20) == 5

    # Celery's other control calls: a clear answer for what this worker cannot do.
    assert "start it with --autoscale" in control.autoscale(4, 1, timeout=3.0)[0]["a@host"]["error"]
    assert "restart it with -E" in control.enable_events(timeout=3.0)[0]["a@host"]["error"]
    assert control.disable_events(timeout=3.0) == [{"a@host": {"ok": "task events already disabled"}}]
    assert "start it with -E" in control.heartbeat(timeout=3.0)[0]["a@host"]["error"]
    with pytest.raises(NotImplementedError, match="pool_restart is not supported"):
        control.pool_restart()
    out = _cli(app_env, "control", "terminate", "SIGKILL", "some-id", "--timeout", "3")
    assert out.returncode == 0 and "revoked 1 task(s)" in out.stdout, out.stdout + out.stderr
    assert "some-id" in inspect.revoked()["a@host"]

    # The command line: arguments converted with the command's declared types.
    out = _cli(app_env, "control", "increase_prefetch_count", "2", "--timeout", "3")
    assert out.returncode == 0 and "prefetch count incremented" in out.stdout, out.stdout + out.stderr
    out = _cli(app_env, "inspect", "current_prefetch_count", "--json", "--timeout", "3")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"a@host": {"prefetch_count": 13}}
    out = _cli(app_env, "inspect", "echo_state", "hello", "a", "b", "--json", "--timeout", "3")
    echoed = json.loads(out.stdout)["a@host"]
    assert echoed["word"] == "hello" and echoed["more"] == ["a", "b"]
    listing = _cli(app_env, "inspect", "--list").stdout
    assert "current_prefetch_count" in listing and "query_task" in listing and "increase_prefetch_count" not in listing
    assert "increase_prefetch_count [N=1]" in _cli(app_env, "control", "--list").stdout
    wrong = _cli(app_env, "control", "increase_prefetch_count", "many")
    assert wrong.returncode == 2 and "bad value 'many' for n" in wrong.stderr
    unknown = _cli(app_env, "inspect", "no_such_command")
    assert unknown.returncode == 2 and "'no_such_command' is not a known inspect command" in unknown.stderr
    assert "current_prefetch_count" in unknown.stderr


def test_a_custom_command_changes_the_prefetch_of_the_pool(capp: Any, start_worker: Any, tmp_path: Path,
                                                            broker_kind: str) -> None:
    if broker_kind == "amqp":
        pytest.skip("RabbitMQ cannot list what a consumer holds (inspect reserved), which shows the effect")
    worker = start_worker("-c", "1", "-n", "a@host", "--prefetch-multiplier", "1", app="control_app")
    control = capp.app.control
    assert control.broadcast("increase_prefetch_count", {"n": 3}, reply=True, timeout=3.0)
    worker.wait_for(r"prefetch count now 4")
    # While one task keeps the slot busy, four more are sent: the next fetch takes all four.
    blocking = tmp_path / "blocking"
    capp.hold.delay(str(blocking), 1.0)
    wait_until(blocking.exists, 20, message="the first task started")
    long = capp.hold.apply_async((str(tmp_path / "trace"), 30), priority=3)
    others = [capp.add.delay(i, i) for i in range(3)]
    inspect = control.inspect(timeout=3.0)
    reserved = wait_until(lambda: len((inspect.reserved() or {}).get("a@host") or []) == 3 and inspect.reserved(), 20,
                          message="three messages held beside the running one")
    assert sorted(r["id"] for r in reserved["a@host"]) == sorted(r.id for r in others)
    control.revoke(long.id, terminate=True)
    assert [r.get(timeout=20) for r in others] == [0, 2, 4]


def test_inspect_replies_carry_celerys_fields(capp: Any, start_worker: Any, tmp_path: Path, broker_kind: str,
                                              app_env: dict[str, str]) -> None:
    start_worker("-c", "1", "-n", "a@host", "--prefetch-multiplier", "2", app="control_app")
    inspect = capp.app.control.inspect(timeout=3.0)
    assert [capp.add.delay(i, 1).get(timeout=20) for i in range(3)] == [1, 2, 3]
    assert capp.limited.delay().get(timeout=20) == "limited"

    # While a short task keeps the only slot busy, two more are sent: the worker's next fetch takes
    # both (prefetch 2), runs the one of higher priority and holds the other.
    blocking = tmp_path / "blocking"
    capp.hold.delay(str(blocking), 1.0)
    wait_until(blocking.exists, 20, message="the first task started")
    trace = tmp_path / "trace"
    running = capp.hold.apply_async((str(trace), 30), {"note": "n"}, priority=3)
    waiting = capp.hold.apply_async((str(trace), 0.1))
    wait_until(lambda: trace.exists(), 20, message="the held task started")
    active = wait_until(lambda: (inspect.active() or {}).get("a@host"), 10, message="active")
    [item] = active
    assert set(item) >= {"id", "name", "args", "kwargs", "type", "hostname", "time_start", "acknowledged",
                         "delivery_info", "worker_pid"}
    assert item["id"] == running.id and item["name"] == item["type"] == "control_app.hold"
    assert item["args"] == [str(trace), 30] and item["kwargs"] == {"note": "n"} and item["hostname"] == "a@host"
    assert item["acknowledged"] is False and isinstance(item["worker_pid"], int) and item["time_start"] > 0
    assert item["delivery_info"] == {"exchange": "", "routing_key": "celery", "priority": 3, "redelivered": False}

    queried = inspect.query_task(running.id, "unknown-id")["a@host"]
    assert list(queried) == [running.id] and queried[running.id][0] == "active"
    assert queried[running.id][1]["args"] == [str(trace), 30]
    if broker_kind != "amqp":  # RabbitMQ cannot list what a consumer holds
        reserved = wait_until(lambda: (inspect.reserved() or {}).get("a@host"), 10, message="reserved")
        assert reserved[0]["id"] == waiting.id and reserved[0]["args"] == [str(trace), 0.1]
        assert reserved[0]["delivery_info"]["routing_key"] == "celery" and reserved[0]["time_start"] is None
        assert inspect.query_task([waiting.id])["a@host"][waiting.id][0] == "reserved"

    stats = inspect.stats()["a@host"]
    assert stats["total"] == {"control_app.add": 3, "control_app.limited": 1, "control_app.hold": 1}
    assert stats["processed"] == 5
    assert isinstance(stats["pid"], int) and int(stats["clock"]) > 0 and stats["uptime"] >= 0
    assert stats["pool"]["max-concurrency"] == 1 and len(stats["pool"]["processes"]) == 1
    assert stats["prefetch_count"] == 2 and stats["rusage"]["maxrss"] > 0
    assert stats["broker"]["transport"] == {"sqlite": "sqlite", "redis": "redis", "amqp": "amqp",
                                           "postgres": "postgresql"}[broker_kind]
    if broker_kind != "sqlite":
        assert stats["broker"]["hostname"] == "127.0.0.1" and isinstance(stats["broker"]["port"], int)

    registered = inspect.registered()["a@host"]
    assert "control_app.limited [rate_limit=100/s]" in registered and "control_app.add" in registered
    assert all(not name.startswith("celery.") for name in registered)
    with_limits = inspect.registered("time_limit", "soft_time_limit")["a@host"]
    assert "control_app.describe_request [time_limit=30 soft_time_limit=20]" in with_limits

    assert inspect.clock()["a@host"]["clock"] > 0
    assert inspect.scheduled() == {"a@host": []}
    [queue] = inspect.active_queues()["a@host"]
    assert queue["name"] == queue["routing_key"] == "celery" and queue["exchange"]["type"] == "direct"

    conf = inspect.conf()["a@host"]
    assert conf["worker_heartbeat_interval"] == 0.5 and conf["my_api_key"] == "********"
    assert "task_serializer" not in conf and inspect.conf(with_defaults=True)["a@host"]["task_serializer"] == "json"
    report = inspect.report()["a@host"]["ok"]
    assert "celeriac:" in report and "python:" in report and "worker_heartbeat_interval" in report
    assert "hunter2" not in json.dumps(inspect.conf(with_defaults=True)) + report
    assert inspect.memsample()["a@host"].endswith("B")
    assert "rss (end)" in inspect.memdump()["a@host"]
    assert "not supported" in inspect.objgraph()["a@host"]["error"]

    out = _cli(app_env, "inspect", "registered", "rate_limit", "--json", "--timeout", "3")
    assert "control_app.limited [rate_limit=100/s]" in json.loads(out.stdout)["a@host"]
    out = _cli(app_env, "inspect", "query_task", running.id, "--json", "--timeout", "3")
    assert json.loads(out.stdout)["a@host"][running.id][0] == "active"
    out = _cli(app_env, "inspect", "conf", "true", "--json", "--timeout", "3")
    assert json.loads(out.stdout)["a@host"]["task_serializer"] == "json"
    capp.app.control.revoke(running.id, terminate=True)


def test_the_request_a_task_sees(capp: Any, start_worker: Any) -> None:
    start_worker("-c", "1", "-n", "req@host", app="control_app")
    result = capp.describe_request.apply_async((1,), {"k": "v"}, headers={"custom": "x"}, expires=600, priority=5)
    r = result.get(timeout=20)
    assert r["id"] == r["correlation_id"] == r["root_id"] == result.id
    assert r["task"] == "control_app.describe_request" and r["args"] == [1] and r["kwargs"] == {"k": "v"}
    assert r["retries"] == 0 and r["is_eager"] is False and r["called_directly"] is False
    assert r["hostname"] == "req@host" and r["parent_id"] is None and r["group"] is None and r["taskset"] is None
    assert r["timelimit"] == [30, 20] and r["time_limit"] == 30 and r["soft_time_limit"] == 20
    assert r["delivery_info"] == {"exchange": "", "routing_key": "celery", "priority": 5, "redelivered": False}
    assert r["headers"] == {"custom": "x"} and r["properties_is_dict"] and r["replaced_task_nesting"] == 0
    assert r["expires"] and r["eta"] is None and r["origin"] and r["ignore_result"] is False
    # Per-call limits win over the task's, in Celery's (hard, soft) order.
    r = capp.describe_request.apply_async(time_limit=9, soft_time_limit=4).get(timeout=20)
    assert (r["timelimit"], r["time_limit"], r["soft_time_limit"]) == ([9, 4], 9, 4) and r["headers"] is None
    # A retry keeps the custom headers and the limits; it is a new message, not a redelivery.
    again = capp.retried_request.apply_async(headers={"trace": "t1"}, time_limit=7).get(timeout=20)
    assert again == {"retries": 1, "headers": {"trace": "t1"}, "redelivered": False, "time_limit": 7}
    # Inside a group, and as a replacement.
    from celeriac import group
    members = group(capp.describe_request.s(i) for i in range(2)).apply_async().get(timeout=20)
    assert [m["group_index"] for m in members] == [0, 1] and members[0]["group"] == members[1]["group"] is not None
    replaced = capp.replaced_by_describe.delay().get(timeout=20)
    assert replaced["replaced_task_nesting"] == 1 and replaced["args"] == ["replacement"]


def test_reject(capp: Any, start_worker: Any, tmp_path: Path, app_env: dict[str, str]) -> None:
    failures = tmp_path / "failures"
    start_worker("-c", "1", "-n", "rej@host", app="control_app",
                 env={**app_env, "CONTROL_TEST_FAILURES": str(failures)})
    # requeue=True: delivered again, and that delivery says redelivered (Celery's docs example).
    trace = tmp_path / "deliveries"
    assert capp.requeues.delay(str(trace)).get(timeout=20) == "received two times"
    assert trace.read_text().split() == ["False", "True"]

    # requeue=False: FAILURE with the Reject as its result, and the message kept with the reason.
    result = capp.rejects_for_good.delay()
    with pytest.raises(Reject, match="file too big"):
        result.get(timeout=20)
    assert result.state == states.FAILURE and result.failed()
    from celeriac import protocol
    dead = wait_until(lambda: [d for d in capp.app.broker.dead_letters()
                               if protocol.unpack(d.payload).task_id == result.id], 10,
                      message="the rejected message in the dead letters")
    assert "rejected by the task: file too big" in dead[0].reason
    assert f"{result.id} Reject" in failures.read_text().splitlines()  # task_failure, as for any failure
    # A rejected chord member fails its chord instead of leaving it waiting.
    from celeriac import chord
    from celeriac.exceptions import ChordError
    failing = chord([capp.add.s(1, 1), capp.rejects_for_good.s()], capp.tsum.s()).apply_async()
    with pytest.raises((ChordError, Reject)):
        failing.get(timeout=20)
    assert capp.add.delay(1, 1).get(timeout=20) == 2  # the worker goes on


def test_autoscale_range_changes_on_a_running_worker(capp: Any, start_worker: Any) -> None:
    start_worker("--autoscale", "3,1", "-n", "auto@host", app="control_app")
    control = capp.app.control
    assert control.autoscale(5, 2, timeout=3.0) == [{"auto@host": {"ok": "autoscale now max=5 min=2"}}]
    assert control.inspect(timeout=3.0).stats()["auto@host"]["pool"]["autoscale"] == [5, 2]
    assert "1 <= min <= max" in control.autoscale(1, 2, timeout=3.0)[0]["auto@host"]["error"]
    assert control.inspect(timeout=3.0).stats()["auto@host"]["pool"]["autoscale"] == [5, 2]
