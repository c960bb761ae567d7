"""`celeriac events`: a live terminal view of workers and tasks, and `--dump` for pipes."""

from __future__ import annotations

import fnmatch
import json
import signal
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, TextIO

from .events import Receiver, State, TaskState

if TYPE_CHECKING:
    from rich.console import RenderableType

    from .app import Celeriac

_STATE_STYLE = {"SUCCESS": "green", "FAILURE": "bold red", "STARTED": "yellow", "RECEIVED": "cyan",
                "PENDING": "dim", "RETRY": "magenta", "REVOKED": "red", "REJECTED": "red"}


class Filters:
    def __init__(self, task: str | None = None, state: str | None = None) -> None:
        self.task = task
        self.states = {s.strip().upper() for s in state.split(",")} if state else set()

    def task_matches(self, task: TaskState) -> bool:
        if self.task and not (task.name and fnmatch.fnmatchcase(task.name, self.task)):
            return False
        return not self.states or task.state in self.states

    def event_matches(self, event: dict[str, Any], state: State) -> bool:
        kind = str(event.get("type", ""))
        if not kind.startswith("task-"):
            return not (self.task or self.states)
        task = state.tasks.get(str(event.get("uuid")))
        return task is not None and self.task_matches(task)


def dump(app: "Celeriac", out: TextIO, as_json: bool, filters: Filters, timeout: float | None = None,
         limit: int | None = None) -> int:
    """Print each event as it arrives, one line each; returns how many were printed."""
    state = State()
    receiver = Receiver(app=app)
    _stop_on_signals(lambda: setattr(receiver, "should_stop", True))
    printed = 0
    for event in receiver.itercapture(timeout=timeout):
        state.event(event)
        if not filters.event_matches(event, state):
            continue
        out.write((json.dumps(event, default=repr) if as_json else _event_line(event)) + "\n")
        out.flush()
        printed += 1
        if limit is not None and printed >= limit:
            break
    return printed


def _event_line(event: dict[str, Any]) -> str:
    when = datetime.fromtimestamp(float(event.get("timestamp") or 0)).strftime("%H:%M:%S.%f")[:-3]
    skip = {"type", "timestamp", "hostname", "clock", "utcoffset", "local_received", "traceback"}
    fields = " ".join(f"{k}={_short(v)}" for k, v in event.items() if k not in skip and v not in (None, ""))
    return f"{when} {event.get('type')} {event.get('hostname')} {fields}"


def _short(value: Any, width: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def live(app: "Celeriac", filters: Filters, refresh: float = 0.5, max_tasks: int = 10000) -> None:
    """The live view, until Ctrl-C or SIGTERM."""
    from rich.console import Console
    from rich.live import Live

    state = State(max_tasks=max_tasks)
    lock = threading.Lock()
    receiver = Receiver(app=app)
    receiver.subscribe()
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            try:
                for event in receiver.itercapture(timeout=refresh):
                    with lock:
                        state.event(event)
            except Exception as exc:  # the broker went away: show it, keep trying
                with lock:
                    state.counts["error: " + str(exc)[:120]] += 1
                stop.wait(1.0)

    _stop_on_signals(stop.set)
    thread = threading.Thread(target=feed, name="celeriac-events-receiver", daemon=True)
    thread.start()
    console = Console()
    started = time.time()
    with Live(console=console, refresh_per_second=max(1, int(1 / refresh)), screen=False,
              transient=False) as view:
        while not stop.is_set():
            with lock:
                view.update(render(app, state, filters, receiver, started, console.size.height,
                                   console.size.width))
            stop.wait(refresh)
    receiver.should_stop = True


def render(app: "Celeriac", state: State, filters: Filters, receiver: Receiver, started: float,
           height: int = 40, width: int = 160) -> "RenderableType":
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    wide = width >= 110  # a narrow terminal keeps what matters whole: id, name, state, outcome
    alive = state.alive_workers()
    header = Text.assemble(
        ("celeriac events", "bold"), f"  {app.broker.safe_url}  ",
        (f"{len(alive)} worker(s) online", "green" if alive else "red"),
        f"  {state.throughput():.1f} tasks/s  events {state.event_count}",
        (f" (missed {receiver.missed})" if receiver.missed else ""),
        f"  up {int(time.time() - started)}s")
    if filters.task or filters.states:
        header.append(f"  filter: {filters.task or '*'} {','.join(sorted(filters.states)) or 'any state'}",
                      style="cyan")
    frame = box.HEAVY_HEAD if wide else box.SIMPLE_HEAD  # narrow: no vertical rules, more room for text
    compact: dict[str, Any] = {} if wide else {"pad_edge": False, "collapse_padding": True}
    workers = Table(title="workers", title_justify="left", expand=True, box=frame, **compact)
    workers.add_column("worker", ratio=3, min_width=12, no_wrap=True, overflow="ellipsis")
    workers.add_column("status", min_width=7, no_wrap=True)
    workers.add_column("active", no_wrap=True)
    workers.add_column("processed", no_wrap=True)
    if wide:
        workers.add_column("load", no_wrap=True)
    workers.add_column("heartbeat", no_wrap=True)
    workers.add_column("dropped", no_wrap=True)
    for w in sorted(state.workers.values(), key=lambda w: w.hostname):
        load = " ".join(f"{x:.2f}" for x in (w.loadavg or [])) or "-"
        workers.add_row(w.hostname, Text(w.status, style="green" if w.alive else "red"), str(w.active),
                        str(w.processed), *([load] if wide else []),
                        f"{max(0.0, time.time() - w.last_heartbeat):.0f}s ago", str(w.events_dropped))
    if not state.workers:
        workers.add_row("(no worker events yet: start workers with -E)", *[""] * (6 if wide else 5))
    rows = max(5, height - 10 - len(state.workers))
    shown: list[TaskState] = []
    for task in state.itertasks():
        if len(shown) >= rows:
            break
        if filters.task_matches(task):
            shown.append(task)
    longest_name = min(28, max([len(t.name or "?") for t in shown] + [4]))
    tasks = Table(title="tasks (newest first)", title_justify="left", expand=True, box=frame, **compact)
    tasks.add_column("uuid", min_width=8, max_width=8, no_wrap=True)
    tasks.add_column("name", ratio=3 if wide else None, min_width=longest_name, no_wrap=True, overflow="ellipsis")
    tasks.add_column("state", min_width=8, no_wrap=True)
    if wide:  # narrow: the workers table above says who runs what
        tasks.add_column("worker", ratio=2, min_width=10, no_wrap=True, overflow="ellipsis")
        tasks.add_column("received", min_width=8, no_wrap=True)
    tasks.add_column("runtime", min_width=7, no_wrap=True)
    tasks.add_column("result / exception", ratio=4, min_width=12, no_wrap=True, overflow="ellipsis")
    for task in shown:
        received = datetime.fromtimestamp(task.received).strftime("%H:%M:%S") if task.received else "-"
        runtime = f"{task.runtime:.3f}s" if task.runtime is not None else "-"
        outcome = task.exception or task.result or ""
        where = [task.hostname or "-", received] if wide else []
        tasks.add_row(task.uuid[:8], task.name or "?", Text(task.state, style=_STATE_STYLE.get(task.state, "")),
                      *where, runtime, Text(outcome, style="red" if task.exception else ""))
    return Group(header, workers, tasks)


def _stop_on_signals(stop: Callable[[], Any]) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop())
