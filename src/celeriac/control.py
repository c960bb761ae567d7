"""`app.control`: operations on queues and workers through the broker."""

from __future__ import annotations

import signal as _signal
import time
import uuid
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from .app import Celeriac


class Control:
    def __init__(self, app: "Celeriac") -> None:
        self.app = app

    # --- remote control: commands through the store every worker reads ---

    def broadcast(self, command: str, arguments: dict[str, Any] | None = None,
                  destination: Sequence[str] | None = None, reply: bool = False, timeout: float = 1.0,
                  limit: int | None = None) -> list[dict[str, Any]]:
        """Send a command to every live worker (or those named in `destination`).

        With reply=True, wait up to `timeout` seconds for their answers: [{hostname: answer}].
        Waiting ends early once every live worker (from heartbeats) has answered.
        """
        reply_id = uuid.uuid4().hex if reply else None
        backend = self.app.backend
        backend.control_send({"command": command, "arguments": arguments or {},
                              "destination": list(destination) if destination else None,
                              "reply_id": reply_id, "sent": time.time()}, expires_in=max(10.0, timeout * 3))
        if reply_id is None:
            return []
        expected = self._expected_replies(destination)
        if limit is not None:
            expected = min(expected, limit) if expected else limit
        deadline = time.monotonic() + timeout
        replies: list[dict[str, Any]] = []
        while True:
            replies = backend.control_replies(reply_id)
            if (expected and len(replies) >= expected) or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        return [{r["hostname"]: r["reply"]} for r in replies]

    def _expected_replies(self, destination: Sequence[str] | None) -> int:
        try:
            live = self.live_workers()
        except Exception:  # heartbeats unreadable: wait for the whole timeout
            return 0
        names = {str(info.get("hostname")) for info in live.values()}
        return len([n for n in names if not destination or n in destination])

    def inspect(self, destination: Sequence[str] | None = None, timeout: float = 1.0) -> "Inspect":
        return Inspect(self, destination, timeout)

    def ping(self, destination: Sequence[str] | None = None, timeout: float = 1.0) -> list[dict[str, Any]]:
        return self.broadcast("ping", destination=destination, reply=True, timeout=timeout)

    def rate_limit(self, task_name: str, rate_limit: str | None, destination: Sequence[str] | None = None,
                   reply: bool = True, timeout: float = 1.0) -> list[dict[str, Any]]:
        """Change a task's rate limit on the workers ("10/s"; None or "0" removes it)."""
        if rate_limit not in (None, "0", 0):
            from .worker.ratelimit import interval_of
            interval_of(rate_limit)  # a bad rate fails here, not on every worker
        return self.broadcast("rate_limit", {"task_name": task_name, "rate_limit": rate_limit},
                              destination, reply, timeout)

    def time_limit(self, task_name: str, soft: float | None = None, hard: float | None = None,
                   destination: Sequence[str] | None = None, reply: bool = True,
                   timeout: float = 1.0) -> list[dict[str, Any]]:
        """Change a task's time limits on the workers (they win over the limits in messages)."""
        return self.broadcast("time_limit", {"task_name": task_name, "soft": soft, "hard": hard},
                              destination, reply, timeout)

    def shutdown(self, destination: Sequence[str] | None = None, reply: bool = True,
                 timeout: float = 1.0) -> list[dict[str, Any]]:
        """Warm shutdown of the workers."""
        return self.broadcast("shutdown", destination=destination, reply=reply, timeout=timeout)

    def pool_grow(self, n: int = 1, destination: Sequence[str] | None = None, reply: bool = True,
                  timeout: float = 1.0) -> list[dict[str, Any]]:
        return self.broadcast("pool_grow", {"n": int(n)}, destination, reply, timeout)

    def pool_shrink(self, n: int = 1, destination: Sequence[str] | None = None, reply: bool = True,
                    timeout: float = 1.0) -> list[dict[str, Any]]:
        return self.broadcast("pool_shrink", {"n": int(n)}, destination, reply, timeout)

    def add_consumer(self, queue: str, destination: Sequence[str] | None = None, reply: bool = True,
                     timeout: float = 1.0, **_ignored: Any) -> list[dict[str, Any]]:
        return self.broadcast("add_consumer", {"queue": queue}, destination, reply, timeout)

    def cancel_consumer(self, queue: str, destination: Sequence[str] | None = None, reply: bool = True,
                        timeout: float = 1.0, **_ignored: Any) -> list[dict[str, Any]]:
        return self.broadcast("cancel_consumer", {"queue": queue}, destination, reply, timeout)

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
        """Workers alive now (from their heartbeats), with what they said about themselves."""
        broker = self.app.broker
        return broker.live_workers() if broker.tracks_workers else self.app.backend.live_workers()

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

    def revoke_by_stamped_headers(self, headers: dict[str, Any], destination: Any = None, terminate: bool = False,
                                  signal: str | None = None, **kwargs: Any) -> None:
        """Revoke every task stamped with one of these stamps ({name: value or [values]}, see
        canvas stamping): a worker that has not started such a task never will, for
        `worker_revoke_expires` seconds, as with revoke(). Tasks already running go on:
        terminate=True is not supported here; revoke those by id."""
        if terminate:
            raise NotImplementedError(
                "revoke_by_stamped_headers(terminate=True) is not supported: celeriac revokes by stamp "
                "only tasks that have not started; end running ones with app.control.revoke(ids, terminate=True)")
        from .worker.revocations import stamp_revocation
        entries = [stamp_revocation(str(name), value) for name, values in headers.items()
                   for value in (values if isinstance(values, (list, tuple, set)) else [values])]
        if entries:
            self.app.backend.revoke(entries, float(self.app.conf.worker_revoke_expires or 10800.0), None)


class Inspect:
    """`app.control.inspect()`: questions to the workers; each method returns {hostname: answer},
    or None when no worker answered in time (as in Celery)."""

    def __init__(self, control: Control, destination: Sequence[str] | None, timeout: float) -> None:
        self.control = control
        self.destination = destination
        self.timeout = timeout

    def _ask(self, command: str, **arguments: Any) -> dict[str, Any] | None:
        replies = self.control.broadcast(command, arguments, self.destination, reply=True, timeout=self.timeout)
        merged: dict[str, Any] = {}
        for reply in replies:
            merged.update(reply)
        return merged or None

    def ping(self) -> dict[str, Any] | None:
        return self._ask("ping")

    def active(self) -> dict[str, Any] | None:
        """Tasks running now, per worker."""
        return self._ask("active")

    def reserved(self) -> dict[str, Any] | None:
        """Tasks a worker has fetched and not started yet."""
        return self._ask("reserved")

    def scheduled(self) -> dict[str, Any] | None:
        """Tasks with an ETA held by a worker: always empty lists in celeriac (ETA tasks wait in the
        broker, not in a worker's memory)."""
        return self._ask("scheduled")

    def registered(self) -> dict[str, Any] | None:
        return self._ask("registered")

    registered_tasks = registered

    def stats(self) -> dict[str, Any] | None:
        return self._ask("stats")

    def revoked(self) -> dict[str, Any] | None:
        return self._ask("revoked")

    def active_queues(self) -> dict[str, Any] | None:
        return self._ask("active_queues")
