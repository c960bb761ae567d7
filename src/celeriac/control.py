"""`app.control`: operations on queues and workers through the broker."""

from __future__ import annotations

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
        raise NotImplementedError(
            "revoke() is not available yet in celeriac (tracked as the revocation issue); "
            "use expires= on apply_async to keep a task from running late")
