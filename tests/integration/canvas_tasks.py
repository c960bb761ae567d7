"""Tasks for the canvas tests of wave 2 (tests/integration/test_canvas_parity.py); the worker
imports this module with -A canvas_tasks."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from celeriac import Celeriac, Task

app = Celeriac("canvas_tasks")
app.conf.worker_heartbeat_interval = 0.5
app.conf.worker_lease_timeout = 3.0
app.conf.result_extended = True  # stamps are stored with the result, as in Celery


def _append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def tsum(numbers: list[int]) -> int:
    return sum(numbers)


@app.task
def collect(values: list[Any]) -> list[Any]:
    return values


@app.task
def record(path: str, *values: Any) -> str:
    """A callback: one line per call, with whatever arguments it got."""
    _append(path, " ".join(str(v) for v in values) or "-")
    return path


@app.task
def fail(message: str = "boom") -> None:
    raise ValueError(message)


@app.task
def record_error(request: Any, exc: BaseException, traceback: Any, path: str) -> None:
    """An error callback run in the worker: one line per failed task."""
    _append(path, f"{request.id} {exc!r}")


@app.task(bind=True)
def stamps_seen(self: Task[Any, Any], *previous: Any) -> dict[str, Any]:
    return {"stamped_headers": self.request.stamped_headers, "stamps": self.request.stamps,
            "header_stamps": (self.request.headers or {}).get("stamps")}


@app.task(bind=True)
def grow_chord(self: Task[Any, Any], x: int) -> int:
    """A chord header task that adds a member to its own chord (Celery's add_to_chord)."""
    self.add_to_chord(add.s(x, 100))
    return x


@app.task(bind=True)
def grow_chord_lazily(self: Task[Any, Any], x: int) -> int:
    sig = self.add_to_chord(add.s(x, 1000), lazy=True)
    sig.delay()
    return x


@app.task(bind=True)
def not_in_chord(self: Task[Any, Any]) -> str:
    try:
        self.add_to_chord(add.s(1, 1))
    except ValueError as exc:
        return str(exc)
    return "no error"


@app.task
def sleep_then_record(path: str, value: str, seconds: float) -> str:
    time.sleep(seconds)
    _append(path, value)
    return value


def lines(path: str | Path) -> list[str]:
    p = Path(path)
    return p.read_text().splitlines() if p.exists() else []


class StampsReplacement(Task):  # type: ignore[type-arg]
    """Celery 5.3's on_replace hook: stamp what replaces a task."""

    def on_replace(self, sig: Any) -> Any:
        sig.stamp(replaced_by=self.name)
        return super().on_replace(sig)


@app.task(bind=True, base=StampsReplacement)
def replaced_by_stamps_seen(self: Task[Any, Any]) -> None:
    raise self.replace(stamps_seen.s())


@app.task
def record_result(value: Any, path: str) -> Any:
    """A link callback: gets the parent's result first, as in Celery."""
    _append(path, str(value))
    return value


@app.task
def sends_lazy_chord(n: int) -> str:
    """Starts a chord whose header is a generator, from inside a task; returns the body's id."""
    from celeriac import chord
    return str(chord((add.s(i, i) for i in range(n)), tsum.s()).delay().id)
