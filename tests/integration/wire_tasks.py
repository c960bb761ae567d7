"""The celeriac side of tests/integration/test_celery_wire.py: task names as a Celery project's
`tasks` module would have them, on Celery's default queue, with nothing else configured."""

from __future__ import annotations

import os
import time

from celeriac import Celeriac

app = Celeriac("tasks")
app.conf.task_default_queue = "celery"
if os.environ.get("WIRE_QUEUE_TYPE"):  # "quorum": tests/integration/test_rabbitmq_quorum.py
    app.conf.task_default_queue_type = os.environ["WIRE_QUEUE_TYPE"]
app.conf.worker_heartbeat_interval = 0.5
app.conf.worker_lease_timeout = 3.0
if os.environ.get("WIRE_VISIBILITY_TIMEOUT"):  # kombu's visibility timeout, short for a test
    app.conf.broker_transport_options = {"visibility_timeout": float(os.environ["WIRE_VISIBILITY_TIMEOUT"])}


@app.task(name="tasks.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="tasks.mul")
def mul(x: int, y: int) -> int:
    return x * y


@app.task(name="tasks.fail")
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(name="tasks.now")
def now() -> float:
    return time.time()


@app.task(name="tasks.tsum")
def tsum(numbers: list[int]) -> int:
    return sum(numbers)


@app.task(name="tasks.slow")
def slow(path: str, seconds: float) -> str:
    with open(path, "a") as f:
        f.write(f"start {os.getpid()}\n")
    time.sleep(seconds)
    return "done"


@app.task(name="tasks.crash")
def crash() -> None:
    os._exit(1)  # kills its pool process every time: a poison message


@app.task(name="tasks.count")
def count(n: int, path: str) -> int:
    with open(path, "a") as f:  # one short line per run: appends of this size do not interleave
        f.write(f"celeriac {n} {os.getpid()}\n")
    return n
