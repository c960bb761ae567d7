"""Type-checked by tests/unit/test_typing.py: must pass `mypy --strict` with no error."""

from __future__ import annotations

from typing import Any

from celeriac import Celeriac, Task
from celeriac.decorators import retry

app = Celeriac("typed", broker="memory://typed", backend="memory://typed")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(bind=True, max_retries=3)
def bound(self: Task[Any, Any], name: str) -> str:
    return f"{name}:{self.request.retries}"


@app.task
async def fetch(url: str) -> bytes:
    return url.encode()


@app.task(bind=True)
@retry(max_retries=3, countdown=[1, 2, 3])
def decorated(self: Task[Any, Any], a: int, b: int) -> float:
    return a / b


def use() -> None:
    total: int = add.delay(1, 2).get(timeout=1)
    direct: int = add(1, 2)
    text: str = bound.delay("x").get()
    data: bytes = fetch.delay("http://x").get()
    ratio: float = decorated.delay(1, 2).get()
    print(total, direct, text, data, ratio)
