"""The tutorial's tasks. Start a worker next to this file:

    celeriac -A tasks worker --loglevel=info

With no URL, broker and results live in `celeriac.db` in the current directory.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from celeriac import Celeriac
from celeriac.decorators import retry
from celeriac.log import get_task_logger

app = Celeriac("my_app")
logger = get_task_logger(__name__)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def mul(x: int, y: int) -> int:
    return x * y


@app.task
def xsum(numbers: list[int]) -> int:
    return sum(numbers)


@app.task
def divide(x: float, y: float) -> float:
    return x / y  # divide(1, 0) fails: FAILURE, and get() raises ZeroDivisionError


@app.task(bind=True, max_retries=3)
def fetch(self: Any, url: str) -> str:
    """Fails twice, then succeeds: shows RETRY and self.request.retries."""
    if self.request.retries < 2:
        raise self.retry(exc=ConnectionError(f"{url} unreachable"), countdown=1)
    return f"<html>{url} after {self.request.retries} retries</html>"


def log_retry(request: Any, exc: BaseException | None = None) -> None:
    logger.warning("retrying %s (attempt %d): %r", request.id, request.retries + 1, exc)


@app.task(bind=True)
@retry(max_retries=3, countdown=[1, 2, 3], on_retry=log_retry)
def unreliable(self: Any, a: int, b: int) -> int:
    """The decorator style: a delay per attempt, and a handler told about each retry."""
    if random.random() < 0.5:
        raise ConnectionError("the service blinked")
    return a * b


@app.task
async def fetch_many(n: int) -> int:
    """An async task: the worker runs many of these at once on one event loop."""
    await asyncio.sleep(0.5)
    return n
