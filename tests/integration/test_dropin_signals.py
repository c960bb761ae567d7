"""Celery's signals, sent by a real worker at the right moments with Celery's arguments."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest

from celeriac.brokers import Outgoing
from helpers import wait_until


@pytest.fixture
def dropin(app_env: dict[str, str]) -> Iterator[Any]:
    import dropin_app
    dropin_app.app._reset_connections()
    yield dropin_app
    dropin_app.app._reset_connections()


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def sent(records: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in records if r["signal"] == name]


def one(records: list[dict[str, Any]], signal: str, **match: Any) -> dict[str, Any]:
    found = [r for r in sent(records, signal) if all(r["kwargs"].get(k) == v for k, v in match.items())]
    assert found, f"{signal} {match} not sent; sent: {sorted({r['signal'] for r in records})}"
    return found[0]


def keys(record: dict[str, Any]) -> set[str]:
    return set(record["kwargs"])


def test_worker_sends_celerys_signals_with_celerys_arguments(dropin: Any, start_worker: Any, app_env: Any,
                                                             tmp_path: Path) -> None:
    log = tmp_path / "signals.jsonl"
    worker = start_worker("-c", "1", "-B", app="dropin_app", env={**app_env, "DROPIN_SIGNALS": str(log)})
    app = dropin.app
    assert dropin.plus.delay(2, 3).get(timeout=20) == 5
    with pytest.raises(KeyError):
        dropin.broken.delay().get(timeout=20)
    assert dropin.retry_once.delay().get(timeout=20) == "retried"
    child_id = dropin.spawn.delay().get(timeout=20)
    assert app.AsyncResult(child_id).get(timeout=20) == 2
    unknown = app.send_task("dropin_app.no_such_task", (1,))
    expired = dropin.plus.apply_async((1, 1), expires=datetime.now(UTC) - timedelta(seconds=5))
    unstorable = dropin.unstorable.delay()
    refused = dropin.refuse.delay()
    app.broker.publish([Outgoing("celery", b"\x00 not a task message", 0, None)])
    for result in (unknown, expired, unstorable):
        wait_until(result.ready, 20, message=f"{result.id} to finish")
    wait_until(lambda: sent(read(log), "task_rejected") and len(sent(read(log), "task_rejected")) >= 2, 20,
               message="task_rejected for the refused task and the undecodable message")
    assert refused.id
    wait_until(lambda: sent(read(log), "heartbeat_sent"), 10, message="heartbeat_sent")
    assert worker.terminate() == 0
    records = read(log)

    # start-up, in Celery's order
    order = [r["signal"] for r in records]
    firsts = [order.index(n) for n in ("import_modules", "celeryd_init", "worker_init", "celeryd_after_setup",
                                       "worker_before_create_process", "worker_ready")]
    assert firsts == sorted(firsts), order[:12]
    init = one(records, "celeryd_init")
    assert init["sender"].startswith("celeriac@") and keys(init) == {"instance", "conf", "options"}
    assert init["kwargs"]["conf"]["default_queue"] == "celery" and init["kwargs"]["options"]["has_concurrency"]
    assert keys(one(records, "celeryd_after_setup")) == {"instance", "conf"}
    supervisor_pid = init["pid"]
    assert one(records, "worker_process_init")["pid"] != supervisor_pid  # in the pool process
    assert one(records, "after_setup_logger")["kwargs"]["logger"] == "logger:root"
    assert keys(one(records, "after_setup_logger")) == {"logger", "loglevel", "logfile", "format", "colorize"}
    assert one(records, "after_setup_task_logger")["kwargs"]["logger"] == "logger:celeriac.task"
    assert sent(records, "beat_init") and sent(records, "beat_embedded_init")

    # tasks
    received = one(records, "task_received")
    assert keys(received) == {"request"} and received["pid"] != supervisor_pid
    assert received["kwargs"]["request"]["name"] == received["kwargs"]["request"]["task"]
    assert {r["kwargs"]["request"]["task"] for r in sent(records, "task_received")} >= {
        "dropin_app.plus", "dropin_app.broken", "dropin_app.retry_once", "dropin_app.spawn"}
    prerun = one(records, "task_prerun", task="task:dropin_app.plus", args=[2, 3])
    assert keys(prerun) == {"task_id", "task", "args", "kwargs"} and prerun["sender"] == "task:dropin_app.plus"
    assert keys(one(records, "task_postrun", retval=5)) == {"task_id", "task", "args", "kwargs", "retval", "state"}
    assert keys(one(records, "task_success", result=5)) == {"result"}
    failure = one(records, "task_failure", exception="KeyError")
    assert keys(failure) == {"task_id", "exception", "args", "kwargs", "traceback", "einfo"}
    assert keys(one(records, "task_retry", reason="OSError")) == {"request", "reason", "einfo"}
    revoked = one(records, "task_revoked", expired=True)
    assert keys(revoked) == {"request", "terminated", "signum", "expired"}
    assert revoked["kwargs"]["request"]["id"] == expired.id
    unknown_sent = one(records, "task_unknown", name="dropin_app.no_such_task")
    assert keys(unknown_sent) == {"name", "id", "message", "exc"} and unknown_sent["kwargs"]["id"] == unknown.id
    assert {r["kwargs"]["exc"] for r in sent(records, "task_rejected")} >= {"Reject", "DecodeError"}
    internal = one(records, "task_internal_error", task_id=unstorable.id)
    assert keys(internal) >= {"task_id", "args", "kwargs", "request", "exception", "traceback", "einfo"}
    # Publishing from the worker: spawn() sends plus(); retry_once's retry is a publish too.
    publishes = {r["sender"]: r for r in sent(records, "before_task_publish")}
    assert {"dropin_app.plus", "dropin_app.retry_once"} <= set(publishes), sorted(publishes)
    publish = publishes["dropin_app.plus"]
    assert publish["kwargs"]["routing_key"] == "celery"
    assert keys(publish) == {"body", "exchange", "routing_key", "headers", "properties", "declare", "retry_policy"}
    assert keys(one(records, "after_task_publish")) >= {"body", "exchange", "routing_key"}

    # shutdown
    assert keys(one(records, "worker_shutting_down")) == {"sig", "how", "exitcode"}
    assert keys(one(records, "worker_process_shutdown")) == {"pid", "exitcode"}
    assert order.index("worker_shutting_down") < order.index("worker_shutdown")


def test_setup_logging_receiver_takes_over_logging(dropin: Any, start_worker: Any, app_env: Any,
                                                   tmp_path: Path) -> None:
    log = tmp_path / "signals.jsonl"
    worker = start_worker("-c", "1", app="dropin_app",
                          env={**app_env, "DROPIN_SIGNALS": str(log), "DROPIN_OWN_LOGGING": "1"})
    assert dropin.plus.delay(1, 2).get(timeout=20) == 3
    records = read(log)
    setup = one(records, "setup_logging")
    assert keys(setup) == {"loglevel", "logfile", "format", "colorize"} and setup["kwargs"]["loglevel"] == 20
    assert not sent(records, "after_setup_logger")  # as in Celery: the receiver owns logging
    assert "OWN INFO" in worker.output  # the project's own format is what the worker logs with


def test_client_side_publish_signals(dropin: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    log = tmp_path / "client.jsonl"
    monkeypatch.setenv("DROPIN_SIGNALS", str(log))
    result = dropin.plus.apply_async((1, 2), queue="nowhere")
    records = read(log)
    before, after = one(records, "before_task_publish"), one(records, "after_task_publish")
    assert before["sender"] == after["sender"] == "dropin_app.plus"
    assert before["kwargs"]["headers"]["id"] == result.id and before["kwargs"]["routing_key"] == "nowhere"
    assert [r["signal"] for r in records] == ["before_task_publish", "after_task_publish"]
