"""`state` for remote-control command handlers: `handler(state, **arguments)`, as in Celery.

Handlers run in the worker's main process (the supervisor), which runs no task itself:
what they change there (a module global, a task attribute) is not seen by the pool
processes. Changes that must reach the pool go through the command log (the built-in
`rate_limit`, `time_limit`, `add_consumer` and the prefetch count set through `qos`).
"""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from ..app import Celeriac
    from .remote import SupervisorControl
    from .supervisor import Worker

SET_PREFETCH = "_set_prefetch"  # internal: a worker's pool slots take a new prefetch count


class QoS:
    """The worker's prefetch count (`state.consumer.qos`): how many messages it holds at once.

    `value` is the whole worker's count (per-slot prefetch x pool slots, as Celery counts it);
    a new count is shared out over the slots, rounded up, and applied by each pool process
    the next time it looks at the command log (within `worker_revoke_sync_interval`)."""

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker
        self._wanted: int | None = None

    @property
    def value(self) -> int:
        if self._wanted is not None:
            return self._wanted
        return self.worker.options.prefetch_multiplier * max(1, len(self.worker.slots))

    def set(self, pcount: int) -> int:
        wanted = max(1, int(pcount))
        per_slot = max(1, math.ceil(wanted / max(1, len(self.worker.slots))))
        self._wanted = wanted
        self.worker.options.prefetch_multiplier = per_slot  # pool slots started later
        self.worker.app.backend.control_send(
            {"command": SET_PREFETCH, "arguments": {"worker_id": self.worker.worker_id, "prefetch": per_slot},
             "destination": [self.worker.options.hostname], "reply_id": None, "sent": time.time()}, expires_in=60.0)
        return wanted

    def increment_eventually(self, n: int = 1) -> int:
        return self.set(self.value + int(n))

    def decrement_eventually(self, n: int = 1) -> int:
        return self.set(self.value - int(n))

    def update(self) -> int:
        return self.value


class QueueView:
    """One consumed queue (`state.consumer.task_consumer.queues[i].name`)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<Queue {self.name}>"


class TaskConsumerView:
    def __init__(self, worker: "Worker") -> None:
        self.worker = worker

    @property
    def queues(self) -> list[QueueView]:
        return [QueueView(q) for q in self.worker.options.queues]

    def consuming_from(self, queue: Any) -> bool:
        return str(getattr(queue, "name", queue)) in self.worker.options.queues


class PoolView:
    """`state.consumer.pool`: the pool's size, processes, and grow/shrink."""

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker

    @property
    def num_processes(self) -> int:
        return len(self.worker.slots)

    limit = num_processes

    @property
    def processes(self) -> list[int]:
        return self.worker.pool.pids()

    def grow(self, n: int = 1) -> int:
        return self.worker.pool.grow(int(n))

    def shrink(self, n: int = 1) -> int:
        return self.worker.pool.shrink(int(n))

    @property
    def info(self) -> dict[str, Any]:
        return dict(self.worker.control.pool_info())


class ControllerView:
    """`state.consumer.controller`: the worker as a whole (Celery's WorkController)."""

    def __init__(self, worker: "Worker", pool: PoolView) -> None:
        self.worker = worker
        self.pool = pool
        self.hostname = worker.options.hostname

    @property
    def concurrency(self) -> int:
        return len(self.worker.slots)

    @property
    def autoscaler(self) -> tuple[int, int] | None:
        return self.worker.options.autoscale

    def stats(self) -> dict[str, Any]:
        return self.worker.control.do_stats()


class ConsumerView:
    """`state.consumer`: what Celery users reach for in their commands, mapped onto celeriac's worker."""

    def __init__(self, worker: "Worker", control: "SupervisorControl") -> None:
        self.worker = worker  # celeriac's own Worker, for what the views below do not cover
        self.app: "Celeriac" = worker.app
        self.hostname = worker.options.hostname
        self.pid = os.getpid()
        self.pool = PoolView(worker)
        self.controller = ControllerView(worker, self.pool)
        self.qos = QoS(worker)
        self.task_consumer = TaskConsumerView(worker)
        self._control = control

    @property
    def event_dispatcher(self) -> Any:
        """The worker's event dispatcher (its `send(type, **fields)` is a no-op without -E)."""
        return self.worker.events

    @property
    def prefetch_multiplier(self) -> int:
        return self.worker.options.prefetch_multiplier

    def reset_rate_limits(self) -> None:
        """Nothing to do: rate limits are read from the task for every message."""

    def call_soon(self, fun: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fun(*args, **kwargs)  # handlers already run between the worker's own steps

    def add_task_queue(self, queue: str, *_ignored: Any, **_options: Any) -> dict[str, str]:
        return self._control.do_add_consumer(str(queue))

    def cancel_task_queue(self, queue: str) -> dict[str, str]:
        return self._control.do_cancel_consumer(str(queue))


class CommandState:
    """The first argument of every command handler: `state.app`, `state.hostname`, `state.consumer`."""

    def __init__(self, worker: "Worker", control: "SupervisorControl") -> None:
        self.app = worker.app
        self.hostname = worker.options.hostname
        self.consumer = ConsumerView(worker, control)
        self.worker = worker

    @staticmethod
    def tset(items: Any) -> set[Any]:
        return set(items)

    def __getitem__(self, key: str) -> Any:  # Celery's state is an attribute dict
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)
