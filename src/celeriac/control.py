"""`app.control`: operations on queues and workers through the broker."""

from __future__ import annotations

import signal as _signal
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from .app import Celeriac


class Control:
    def __init__(self, app: "Celeriac") -> None:
        self.app = app

    def known_queues(self) -> list[str]:
        queues = {self.app.conf.task_default_queue}
        queues.update(t.queue for t in self.app.tasks.values() if t.queue)
        routes = self.app.conf.task_routes
        for router in routes if isinstance(routes, (list, tuple)) else [routes] if routes else []:
            if isinstance(router, dict):
                for value in router.values():
                    queue = value if isinstance(value, str) else (value or {}).get("queue")
                    if queue:
                        queues.add(queue)
        return sorted(queues)

    def purge(self, queues: Sequence[str] | None = None) -> int:
        """Delete waiting (ready and delayed) messages; returns how many were removed."""
        return self.app.broker.purge(list(queues) if queues else self.known_queues())

    def queue_sizes(self, queues: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        return self.app.broker.queue_sizes(queues)

    def live_workers(self) -> dict[str, dict[str, Any]]:
        return self.app.broker.live_workers()

    def revoke(self, task_id: str | Sequence[str], terminate: bool = False, signal: str | None = None,
               **kwargs: Any) -> None:
        """Revoke tasks: a worker that has not started one never will (now or after a restart,
        for `worker_revoke_expires` seconds); with terminate=True a running one is ended too
        (signal "SIGTERM", the default: TaskRevokedError is raised inside it; "SIGKILL": its
        pool process is killed). Its state becomes REVOKED."""
        ids = [task_id] if isinstance(task_id, str) else [str(t) for t in task_id]
        if not ids:
            return
        name = None
        if terminate:
            name = (signal or "SIGTERM").upper()
            name = name if name.startswith("SIG") else f"SIG{name}"
            if name not in _signal.Signals.__members__:
                raise ValueError(f"unknown signal {signal!r} for revoke(terminate=True): use 'SIGTERM' or 'SIGKILL'")
        self.app.backend.revoke(ids, float(self.app.conf.worker_revoke_expires or 10800.0), name)
