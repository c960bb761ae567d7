"""The app of tests/integration/test_control_commands.py: custom remote-control commands (as
Celery's workers guide writes them), tasks that report their request, and tasks that reject."""

from __future__ import annotations

import os
import time
from typing import Any

from celeriac import Celeriac, Task, signals
from celeriac.exceptions import Reject
from celeriac.worker.control import control_command, inspect_command

app = Celeriac("control_app")
app.conf.worker_heartbeat_interval = 0.5
app.conf.worker_lease_timeout = 3.0
app.conf.worker_revoke_sync_interval = 0.2
app.conf.my_api_key = "hunter2-secret"  # must never be shown by `inspect conf` / `report`


# --- the workers guide's own examples, verbatim but for the import ---

@control_command(
    args=[('n', int)],
    signature='[N=1]',  # <- used for help on the command-line.
)
def increase_prefetch_count(state, n=1):  # type: ignore[no-untyped-def]
    state.consumer.qos.increment_eventually(n)
    return {'ok': 'prefetch count incremented'}


@inspect_command()
def current_prefetch_count(state):  # type: ignore[no-untyped-def]
    return {'prefetch_count': state.consumer.qos.value}


# --- what else a handler reaches, and a handler that fails ---

@inspect_command(args=[("word", str)], signature="<word>", variadic="more")
def echo_state(state: Any, word: str = "", more: Any = None, **extra: Any) -> dict[str, Any]:
    consumer = state.consumer
    return {"word": word, "more": more, "extra": extra, "hostname": state.hostname,
            "consumer_hostname": consumer.hostname, "app": consumer.app.main, "same_app": state.app is consumer.app,
            "pool": consumer.pool.num_processes, "concurrency": consumer.controller.concurrency,
            "queues": [q.name for q in consumer.task_consumer.queues], "seen": {1, 2}}


@control_command()
def broken(state: Any) -> None:
    raise RuntimeError("handler failed on purpose")


@signals.task_failure.connect
def _record_failure(sender: Any = None, task_id: Any = None, exception: Any = None, **_: Any) -> None:
    path = os.environ.get("CONTROL_TEST_FAILURES")
    if path:
        with open(path, "a") as f:
            f.write(f"{task_id} {type(exception).__name__}\n")


# --- tasks ---

@app.task(bind=True, time_limit=30, soft_time_limit=20)
def describe_request(self: Task[Any, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    r = self.request
    return {name: getattr(r, name) for name in (
        "id", "task", "args", "kwargs", "retries", "is_eager", "called_directly", "eta", "expires", "hostname",
        "root_id", "parent_id", "group", "group_index", "correlation_id", "reply_to", "origin", "timelimit",
        "time_limit", "soft_time_limit", "callbacks", "errbacks", "chain", "chord", "delivery_info", "headers",
        "replaced_task_nesting", "ignore_result", "shadow", "stamps")} | {
        "properties_is_dict": isinstance(r.properties, dict), "taskset": r.taskset}


@app.task(bind=True)
def replaced_by_describe(self: Task[Any, Any]) -> None:
    self.replace(describe_request.s("replacement"))


@app.task(bind=True)
def retried_request(self: Task[Any, Any]) -> dict[str, Any]:
    if self.request.retries == 0:
        raise self.retry(countdown=0.05)
    return {"retries": self.request.retries, "headers": self.request.headers,
            "redelivered": self.request.delivery_info["redelivered"], "time_limit": self.request.time_limit}


@app.task(rate_limit="100/s")
def limited() -> str:
    return "limited"


@app.task
def hold(path: str, seconds: float, note: str = "held") -> str:
    with open(path, "a") as f:
        f.write("start\n")
    time.sleep(seconds)
    return note


@app.task(bind=True, acks_late=True)
def requeues(self: Task[Any, Any], path: str) -> str:
    # Celery's docs example, with a trace of each delivery.
    with open(path, "a") as f:
        f.write(f"{self.request.delivery_info['redelivered']}\n")
    if not self.request.delivery_info['redelivered']:
        raise Reject('no reason', requeue=True)
    return 'received two times'


@app.task(bind=True, acks_late=True)
def rejects_for_good(self: Task[Any, Any]) -> None:
    raise Reject("file too big", requeue=False)


@app.task
def tsum(numbers: list[int]) -> int:
    return sum(numbers)


@app.task
def add(x: int, y: int) -> int:
    return x + y
