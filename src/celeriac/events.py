"""Task and worker events: what workers (`-E`) and clients (`task_send_sent_event`) report,
carried by the broker, and what monitors build on.

Sending never waits on the broker. An event goes into a bounded in-memory buffer; a
background thread sends whatever accumulated, as one batch (one round trip), every
`event_flush_interval` seconds. When the buffer is full - the broker is down or slower than
the worker - new events are dropped and counted, and the worker's heartbeat event says how
many (`events_dropped`): a slow monitor or broker never slows a task down.

Event fields follow Celery's (uuid, name, args, kwargs, result, runtime, exception,
traceback, hostname, timestamp, clock, pid, utcoffset, ...), so monitors written for
Celery's event dicts read these too.
"""

from __future__ import annotations

import atexit
import collections
import fnmatch
import itertools
import json
import logging
import os
import platform
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

from . import __version__
from .brokers.base import EventChannel, EventSubscription

if TYPE_CHECKING:
    from .app import Celeriac

logger = logging.getLogger("celeriac.events")

TASK_EVENT_TYPES = ("task-sent", "task-received", "task-started", "task-succeeded", "task-failed",
                    "task-retried", "task-revoked", "task-rejected")
WORKER_EVENT_TYPES = ("worker-online", "worker-heartbeat", "worker-offline")
EVENT_TYPES = TASK_EVENT_TYPES + WORKER_EVENT_TYPES
SW_IDENT = "celeriac"
HEARTBEAT_EXPIRE_FACTOR = 2.0  # a worker is gone after missing this many heartbeats (as Celery's window)


def channel_for(app: "Celeriac") -> EventChannel:
    """The app's event stream: the broker's, or the result store's where the broker has none."""
    return app.capabilities.event_channel()


def _utcoffset() -> int:
    """Celery's convention: hours *west* of UTC (New York: 5), as time.timezone counts them."""
    return (time.altzone if time.daylight and time.localtime().tm_isdst > 0 else time.timezone) // 3600


# One encoder for every event: json.dumps(default=...) would build a new one per call.
_ENCODER = json.JSONEncoder(default=repr, separators=(",", ":"))
_encode_text: Callable[[str], str] = json.encoder.encode_basestring


class EventDispatcher:
    """Buffers events and sends them in batches from a background thread; `send` never blocks."""

    def __init__(self, app: "Celeriac", hostname: str, *, enabled: bool = True, buffer_size: int | None = None,
                 flush_interval: float | None = None) -> None:
        conf = app.conf
        self.app = app
        self.hostname = hostname
        self.enabled = enabled
        self.buffer_size = int(buffer_size or conf.event_buffer_size)
        self.flush_interval = float(flush_interval or conf.event_flush_interval)
        self.dropped = 0
        self.sent = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._buffer: collections.deque[bytes] = collections.deque()
        self._clock = itertools.count(1)
        self._channel: EventChannel | None = None
        self._channel_of: Any = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._closed = False
        self._failing_since = 0.0
        self.utcoffset = _utcoffset()
        self._tail_of: tuple[str, int, int] | None = None
        self._tail = ""

    def send(self, type_: str, **fields: Any) -> None:
        """Queue one event (`type_` like "task-succeeded"); dropped and counted when the buffer is full."""
        if not self.enabled:
            return
        if self._pid != os.getpid():  # inherited over fork: this process needs its own thread
            self._after_fork()
        if len(self._buffer) >= self.buffer_size:
            self.dropped += 1
            return
        try:
            encoded = _ENCODER.encode(fields) if fields else "{}"
        except (TypeError, ValueError):  # pragma: no cover - default=repr handles the rest
            self.dropped += 1
            return
        # A busy worker sends three events per task: the fields every event carries are spliced
        # in as text (the per-process ones encoded once) rather than encoded again each time.
        # They come last, so like before they win over a caller's field of the same name.
        if self._tail_of != (self.hostname, self.utcoffset, self._pid):
            self._tail_of = (self.hostname, self.utcoffset, self._pid)
            self._tail = f',"hostname":{_encode_text(self.hostname)},"utcoffset":{int(self.utcoffset)},' \
                         f'"pid":{self._pid}}}'
        self._buffer.append(
            f'{encoded[:-1]}{"," if len(encoded) > 2 else ""}"type":{_encode_text(type_)},'
            f'"timestamp":{time.time()!r},"clock":{next(self._clock)}{self._tail}'.encode())
        if self._thread is None:
            self._start()

    def _after_fork(self) -> None:
        self._pid = os.getpid()
        self.dropped = self.sent = 0  # this process's own counts, not its parent's
        self._buffer = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        self._channel = None
        self._closed = False

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="celeriac-events", daemon=True)
            self._thread.start()
            _open_dispatchers.add(self)

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Send what is buffered now (the background thread calls this every flush interval)."""
        with self._lock:
            if not self._buffer:
                return
            batch = [self._buffer.popleft() for _ in range(len(self._buffer))]
            try:
                broker = self.app.broker
                if self._channel is None or self._channel_of is not broker:  # the app's URLs may change
                    self._channel, self._channel_of = channel_for(self.app), broker
                self._channel.send(batch)
                self.sent += len(batch)
                if self._failing_since:
                    logger.warning("events: the broker takes events again (%d dropped meanwhile)", self.dropped)
                    self._failing_since = 0.0
            except Exception as exc:  # never the worker's problem: count them and say so, once in a while
                self.dropped += len(batch)
                now = time.monotonic()
                if not self._failing_since or now - self._failing_since > 60:
                    logger.warning("events: cannot send %d event(s) (%s); dropping events until the broker "
                                   "answers again (%d dropped so far)", len(batch), exc, self.dropped)
                    self._failing_since = now

    def close(self) -> None:
        """Send what is left and stop the thread."""
        self._closed = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread() \
                and self._pid == os.getpid():
            self._thread.join(2)
        self.flush()
        _open_dispatchers.discard(self)


_open_dispatchers: "weakref.WeakSet[EventDispatcher]" = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for dispatcher in list(_open_dispatchers):
        if dispatcher._pid == os.getpid():
            dispatcher.flush()


def worker_fields(freq: float) -> dict[str, Any]:
    return {"freq": freq, "sw_ident": SW_IDENT, "sw_ver": __version__, "sw_sys": platform.system(),
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


# --- reading ---

Handler = Callable[[dict[str, Any]], Any]


class Receiver:
    """Celery's `app.events.Receiver(connection, handlers={...})`: calls a handler per event
    type ("*" catches the rest). `capture()` runs until `should_stop`, `limit` events or `timeout`."""

    def __init__(self, connection: Any = None, handlers: dict[str, Handler] | None = None, *,
                 app: "Celeriac | None" = None, channel: EventChannel | None = None, **_compat: Any) -> None:
        if app is None:
            from .app import current_app
            app = current_app()
        self.app = app
        self.handlers = dict(handlers or {})
        self.channel = channel or channel_for(app)
        self.should_stop = False
        self.received = 0
        self._subscription: EventSubscription | None = None
        self._pending: collections.deque[dict[str, Any]] = collections.deque()  # read, not yet handed out

    def subscribe(self) -> EventSubscription:
        """Start receiving now (capture() does it itself; call it first to not miss events
        sent between creating the receiver and capturing)."""
        if self._subscription is None:
            self._subscription = self.channel.subscribe()
        return self._subscription

    @property
    def missed(self) -> int:
        """Events dropped by the stream's retention before this receiver read them."""
        return self._subscription.missed if self._subscription is not None else 0

    def itercapture(self, limit: int | None = None, timeout: float | None = None,
                    poll: float = 0.5) -> Iterator[dict[str, Any]]:
        subscription = self.subscribe()
        deadline = None if timeout is None else time.monotonic() + timeout
        count = 0
        while not self.should_stop:
            if not self._pending:
                wait = poll if deadline is None else min(poll, deadline - time.monotonic())
                if wait <= 0:
                    return
                self._pending.extend(self._decode(subscription.next_batch(wait)))
            while self._pending:
                self.received += 1
                yield self._pending.popleft()
                count += 1
                if (limit is not None and count >= limit) or self.should_stop:
                    return  # the rest of the batch waits for the next call

    @staticmethod
    def _decode(bodies: list[bytes]) -> Iterator[dict[str, Any]]:
        now = time.time()
        for body in bodies:
            try:
                event = json.loads(body)
            except ValueError:
                continue
            if isinstance(event, dict):  # anything else in the stream is not ours
                event["local_received"] = now
                yield event

    def capture(self, limit: int | None = None, timeout: float | None = None, wakeup: bool = True) -> None:
        for event in self.itercapture(limit=limit, timeout=timeout):
            self.process(event)

    def process(self, event: dict[str, Any]) -> None:
        handler = self.handlers.get(event.get("type", "")) or self.handlers.get("*")
        if handler is not None:
            handler(event)


# --- the state model monitors build on ---

_FINAL = {"task-succeeded": "SUCCESS", "task-failed": "FAILURE", "task-revoked": "REVOKED",
          "task-rejected": "REJECTED"}
_STATE_OF = {"task-sent": "PENDING", "task-received": "RECEIVED", "task-started": "STARTED",
             "task-retried": "RETRY", **_FINAL}
_TIME_FIELD = {"task-sent": "sent", "task-received": "received", "task-started": "started",
               "task-succeeded": "succeeded", "task-failed": "failed", "task-retried": "retried",
               "task-revoked": "revoked", "task-rejected": "rejected"}


@dataclass
class TaskState:
    uuid: str
    name: str | None = None
    state: str = "PENDING"
    args: str | None = None
    kwargs: str | None = None
    hostname: str | None = None
    worker_pid: int | None = None
    retries: int = 0
    eta: str | None = None
    expires: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    result: str | None = None
    runtime: float | None = None
    exception: str | None = None
    traceback: str | None = None
    sent: float | None = None
    received: float | None = None
    started: float | None = None
    succeeded: float | None = None
    failed: float | None = None
    retried: float | None = None
    revoked: float | None = None
    rejected: float | None = None
    timestamp: float = 0.0  # of the latest event

    @property
    def ready(self) -> bool:
        return self.state in ("SUCCESS", "FAILURE", "REVOKED", "REJECTED")


@dataclass
class WorkerState:
    hostname: str
    pid: int | None = None
    freq: float = 2.0
    sw_ident: str | None = None
    sw_ver: str | None = None
    sw_sys: str | None = None
    loadavg: list[float] | None = None
    active: int = 0
    processed: int = 0
    events_dropped: int = 0
    online: bool = True
    last_heartbeat: float = 0.0  # when it was received (local clock)

    @property
    def alive(self) -> bool:
        return self.online and time.time() - self.last_heartbeat < self.freq * HEARTBEAT_EXPIRE_FACTOR + 1.0

    @property
    def status(self) -> str:
        return "online" if self.alive else "offline"


class State:
    """What the events say: tasks by id (the newest `max_tasks`, older ones forgotten) and
    workers by hostname, with counts and a throughput measure. Feed it with `state.event(e)`."""

    def __init__(self, max_tasks: int = 10000, max_workers: int = 1000, window: float = 10.0) -> None:
        self.max_tasks = max_tasks
        self.max_workers = max_workers
        self.window = window
        self.tasks: collections.OrderedDict[str, TaskState] = collections.OrderedDict()
        self.workers: dict[str, WorkerState] = {}
        self.event_count = 0
        self.task_count = 0
        self.counts: collections.Counter[str] = collections.Counter()  # by event type
        self._finished: collections.deque[float] = collections.deque()

    def event(self, event: dict[str, Any]) -> None:
        self.event_count += 1
        kind = str(event.get("type", ""))
        self.counts[kind] += 1
        if kind.startswith("worker-"):
            self._worker_event(kind, event)
        elif kind.startswith("task-"):
            self._task_event(kind, event)

    def _worker_event(self, kind: str, event: dict[str, Any]) -> None:
        hostname = str(event.get("hostname"))
        worker = self.workers.get(hostname)
        if worker is None:
            if len(self.workers) >= self.max_workers:
                gone = [h for h, w in self.workers.items() if not w.alive]
                if not gone:  # all alive: the one silent longest makes room
                    gone = [min(self.workers.values(), key=lambda w: w.last_heartbeat).hostname]
                for h in gone:
                    del self.workers[h]
            worker = self.workers[hostname] = WorkerState(hostname)
        for name in ("pid", "freq", "sw_ident", "sw_ver", "sw_sys", "loadavg", "active", "processed",
                     "events_dropped"):
            if event.get(name) is not None:
                setattr(worker, name, event[name])
        worker.online = kind != "worker-offline"
        worker.last_heartbeat = float(event.get("local_received") or time.time())

    def _task_event(self, kind: str, event: dict[str, Any]) -> None:
        uuid = str(event.get("uuid"))
        task = self.tasks.get(uuid)
        if task is None:
            task = self.tasks[uuid] = TaskState(uuid)
            self.task_count += 1
            while len(self.tasks) > self.max_tasks:
                self.tasks.popitem(last=False)
        else:
            self.tasks.move_to_end(uuid)
        timestamp = float(event.get("timestamp") or 0.0)
        for name in ("name", "args", "kwargs", "retries", "eta", "expires", "root_id", "parent_id",
                     "result", "runtime", "exception", "traceback"):
            if event.get(name) is not None:
                setattr(task, name, event[name])
        if kind != "task-sent" and event.get("hostname"):  # the worker's, never the client's
            task.hostname = event["hostname"]
        if event.get("pid") is not None and kind != "task-sent":
            task.worker_pid = event["pid"]
        if kind in _TIME_FIELD:
            setattr(task, _TIME_FIELD[kind], timestamp)
        new_state = _STATE_OF.get(kind)
        # Events of one task come from different processes (client, pool process), each sent
        # in its own batches: an older event that arrives late never moves a task back.
        if new_state in _FINAL.values():
            moves = not task.ready or timestamp >= task.timestamp
        else:
            moves = timestamp > task.timestamp or (timestamp == task.timestamp and not task.ready)
        if new_state and moves:
            task.state = new_state
        task.timestamp = max(task.timestamp, timestamp)
        if kind in ("task-succeeded", "task-failed"):
            now = time.time()
            self._finished.append(now)
            while self._finished and self._finished[0] < now - self.window:
                self._finished.popleft()

    # --- queries ---

    def throughput(self) -> float:
        """Tasks finished per second over the last `window` seconds."""
        now = time.time()
        while self._finished and self._finished[0] < now - self.window:
            self._finished.popleft()
        return len(self._finished) / self.window

    def itertasks(self, limit: int | None = None) -> Iterator[TaskState]:
        """Newest first."""
        for i, task in enumerate(reversed(self.tasks.values())):
            if limit is not None and i >= limit:
                return
            yield task

    def tasks_by_state(self, state: str) -> list[TaskState]:
        return [t for t in self.tasks.values() if t.state == state]

    def tasks_by_type(self, name: str) -> list[TaskState]:
        return [t for t in self.tasks.values() if t.name and fnmatch.fnmatchcase(t.name, name)]

    def alive_workers(self) -> list[WorkerState]:
        return [w for w in self.workers.values() if w.alive]

    def active_count(self, hostname: str) -> int:
        return sum(1 for t in self.tasks.values() if t.hostname == hostname and t.state == "STARTED")


class Events:
    """`app.events`: Receiver, State and Dispatcher bound to the app, as in Celery."""

    def __init__(self, app: "Celeriac") -> None:
        self.app = app
        self.State = State

    def Receiver(self, connection: Any = None, handlers: dict[str, Handler] | None = None,  # noqa: N802
                 **kwargs: Any) -> Receiver:
        kwargs.setdefault("app", self.app)  # `app=` given too (as Celery code may) is the same app
        return Receiver(connection, handlers, **kwargs)

    def Dispatcher(self, connection: Any = None, hostname: str | None = None,  # noqa: N802
                   enabled: bool = True, **kwargs: Any) -> EventDispatcher:
        import socket
        return EventDispatcher(self.app, hostname or f"celeriac@{socket.gethostname()}", enabled=enabled, **kwargs)


__all__ = ["EVENT_TYPES", "EventDispatcher", "Events", "Receiver", "State", "TASK_EVENT_TYPES", "TaskState",
           "WORKER_EVENT_TYPES", "WorkerState", "channel_for"]
