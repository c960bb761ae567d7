"""The Celery side of tests/integration/test_celery_wire.py: a plain Celery app with Celery's
defaults (no queue arguments, no priorities, JSON), as a project that migrates has it."""

from __future__ import annotations

import os
import time

from celery import Celery

app = Celery("ctasks", broker=os.environ["WIRE_BROKER"], backend=os.environ["WIRE_BACKEND"])
if os.environ.get("WIRE_QUEUE_TYPE"):  # "quorum": tests/integration/test_rabbitmq_quorum.py
    app.conf.task_default_queue_type = os.environ["WIRE_QUEUE_TYPE"]


@app.task(name="tasks.mul")
def mul(x: int, y: int) -> int:
    return x * y


@app.task(name="tasks.cfail")
def cfail(message: str) -> None:
    raise ValueError(message)


@app.task(name="tasks.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="tasks.tsum")
def tsum(numbers: list[int]) -> int:
    return sum(numbers)


@app.task(name="tasks.slow")
def slow(path: str, seconds: float) -> str:
    with open(path, "a") as f:
        f.write(f"celery-start {os.getpid()}\n")
    time.sleep(120)  # the tests kill a Celery worker during this one
    return "done"


@app.task(name="tasks.count")
def count(n: int, path: str) -> int:
    with open(path, "a") as f:
        f.write(f"celery {n} {os.getpid()}\n")
    return n
