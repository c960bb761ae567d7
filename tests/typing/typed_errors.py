"""Each line marked `# E` must be reported by mypy (see tests/unit/test_typing.py)."""

from __future__ import annotations

from typing import Any

from celeriac import Celeriac, Task

app = Celeriac("typed_errors", broker="memory://typed", backend="memory://typed")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(bind=True)
def bound(self: Task[Any, Any], name: str) -> str:
    return name


@app.task
async def fetch(url: str) -> bytes:
    return url.encode()


def misuse() -> None:
    add.delay(1, "x")  # E
    add.delay(1)  # E
    wrong: str = add.delay(1, 2).get()  # E
    bound.delay(3)  # E
    not_bytes: int = fetch.delay("u").get()  # E
    add(1, y="z")  # E
    print(wrong, not_bytes)
