"""`app.control`: operations on queues and workers through the broker."""

from __future__ import annotations

import json
import signal as _signal
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from .app import Celeriac


# A revocation by stamp (revoke_by_stamped_headers) is stored beside the revoked ids, as this
# prefix + JSON [stamp name, stamp value]; no task id starts with it (worker/revocations.py reads it).
STAMP_PREFIX = "celeriac-stamp:"


def stamp_revocation(name: str, value: Any) -> str:
    return STAMP_PREFIX + json.dumps([name, value], sort_keys=True)


class Control:
    def __init__(self, app: "Celeriac") -> None:
        self.app = app

    # --- remote control: commands through the store every worker reads ---

    def broadcast(self, command: str, arguments: dict[str, Any] | None = None,
                  destination: Sequence[str] | str | None = None, reply: bool = False, timeout: float = 1.0,
                  limit: int | None = None, callback: Callable[[dict[str, Any]], Any] | None = None,
                  connection: Any = None, **extra_kwargs: Any) -> list[dict[str, Any]]:
        """Send a command to every live worker (or those named in `destination`).

        With reply=True, wait up to `timeout` seconds for their answers: [{hostname: answer}].
        Waiting ends early once every live worker (from heartbeats) has answered. `callback`
        is called with each {hostname: answer} as it arrives; keyword arguments beyond these
        are the command's arguments too (as in Celery). Custom commands (registered with
        `celeriac.worker.control.control_command` / `inspect_command`) are sent the same way.
        """
        reply_id = uuid.uuid4().hex if reply else None
        backend = self.app.backend
        if isinstance(destination, str):
            destination = [destination]
        arguments = {**(arguments or {}), **extra_kwargs}
        backend.control_send({"command": command, "arguments": arguments,
                              "destination": list(destination) if destination else None,
                              "reply_id": reply_id, "sent": time.time()}, expires_in=max(10.0, timeout * 3))
        if reply_id is None:
            return []
        expected = self._expected_replies(destination)
        if limit is not None:
            expected = min(expected, limit) if expected else limit
        deadline = time.monotonic() + timeout
        replies: list[dict[str, Any]] = []
        told = 0
        while True:
            replies = backend.control_replies(reply_id)
            if callback is not None:
                for answer in replies[told:]:
                    callback({answer["hostname"]: answer["reply"]})
                told = len(replies)
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

    def inspect(self, destination: Sequence[str] | str | None = None, timeout: float = 1.0,
                callback: Callable[[dict[str, Any]], Any] | None = None, limit: int | None = None,
                connection: Any = None) -> "Inspect":
        return Inspect(self, destination, timeout, callback, limit)

    def ping(self, destination: Sequence[str] | None = None, timeout: float = 1.0) -> list[dict[str, Any]]:
        return self.broadcast("ping", destination=destination, reply=True, timeout=timeout)

    def rate_limit(self, task_name: str, rate_limit: str | None, destination: Sequence[str] | None = None,
                   reply: bool = True, timeout: float = 1.0) -> list[dict[str, Any]]:
        """Change a task's rate limit on the workers ("10/s"; None or "0" removes it)."""
        if rate_limit not in (None, "0", 0):
            from .rates import interval_of
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

    def terminate(self, task_id: str | Sequence[str], destination: Sequence[str] | None = None,
                  signal: str = "SIGTERM", **kwargs: Any) -> None:
        """Celery's shortcut for `revoke(task_id, terminate=True, signal=signal)`."""
        self.revoke(task_id, terminate=True, signal=signal)

    def autoscale(self, max: int, min: int, destination: Sequence[str] | None = None, reply: bool = True,
                  timeout: float = 1.0) -> list[dict[str, Any]]:
        """Change the --autoscale range of workers started with it."""
        return self.broadcast("autoscale", {"max": int(max), "min": int(min)}, destination, reply, timeout)

    def enable_events(self, destination: Sequence[str] | None = None, reply: bool = True,
                      timeout: float = 1.0) -> list[dict[str, Any]]:
        """Workers started with -E answer ok; others say to restart them with -E."""
        return self.broadcast("enable_events", destination=destination, reply=reply, timeout=timeout)

    def disable_events(self, destination: Sequence[str] | None = None, reply: bool = True,
                       timeout: float = 1.0) -> list[dict[str, Any]]:
        return self.broadcast("disable_events", destination=destination, reply=reply, timeout=timeout)

    def heartbeat(self, destination: Sequence[str] | None = None, reply: bool = True,
                  timeout: float = 1.0) -> list[dict[str, Any]]:
        """Ask workers started with -E to send a worker-heartbeat event now."""
        return self.broadcast("heartbeat", destination=destination, reply=reply, timeout=timeout)

    def pool_restart(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "pool_restart is not supported: celeriac does not reload modules in a running worker. Restart the "
            "worker (a warm stop loses nothing), or use --max-tasks-per-child to replace pool processes.")

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
        return self.app.capabilities.live_workers()

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
        entries = [stamp_revocation(str(name), value) for name, values in headers.items()
                   for value in (values if isinstance(values, (list, tuple, set)) else [values])]
        if entries:
            self.app.backend.revoke(entries, float(self.app.conf.worker_revoke_expires or 10800.0), None)


class Inspect:
    """`app.control.inspect()`: questions to the workers; each method returns {hostname: answer},
    or None when no worker answered in time (as in Celery). The answers carry Celery's fields
    (docs/workers.md lists them)."""

    def __init__(self, control: Control, destination: Sequence[str] | str | None, timeout: float,
                 callback: Callable[[dict[str, Any]], Any] | None = None, limit: int | None = None) -> None:
        self.control = control
        # One name as a plain string: the answers are that worker's alone, not {name: answer} (Celery's way).
        self._single = destination if isinstance(destination, str) else None
        self.destination = [destination] if isinstance(destination, str) else destination
        self.timeout = timeout
        self.callback = callback
        self.limit = limit

    def _request(self, command: str, **arguments: Any) -> dict[str, Any] | None:
        """Ask any inspect command by name, your own ones included: `inspect()._request("my_command")`."""
        replies = self.control.broadcast(command, arguments, self.destination, reply=True, timeout=self.timeout,
                                         limit=self.limit, callback=self.callback)
        merged: dict[str, Any] = {}
        for reply in replies:
            merged.update(reply)
        if self._single is not None:
            return merged.get(self._single)
        return merged or None

    _ask = _request

    def ping(self, destination: Sequence[str] | None = None) -> dict[str, Any] | None:
        return self._request("ping")

    def active(self, safe: bool | None = None) -> dict[str, Any] | None:
        """Tasks running now, per worker: [{id, name, args, kwargs, type, hostname, time_start,
        acknowledged, delivery_info, worker_pid}]."""
        return self._request("active", safe=safe)

    def reserved(self, safe: bool | None = None) -> dict[str, Any] | None:
        """Tasks a worker has fetched and not started yet (same fields as active)."""
        return self._request("reserved")

    def scheduled(self, safe: bool | None = None) -> dict[str, Any] | None:
        """Tasks with an ETA held by a worker: always empty lists in celeriac (ETA tasks wait in the
        broker, not in a worker's memory)."""
        return self._request("scheduled")

    def registered(self, *taskinfoitems: str) -> dict[str, Any] | None:
        """Registered task names; with attribute names, "name [attr=value ...]" for those set."""
        return self._request("registered", taskinfoitems=list(taskinfoitems))

    registered_tasks = registered

    def stats(self) -> dict[str, Any] | None:
        return self._request("stats")

    def revoked(self) -> dict[str, Any] | None:
        return self._request("revoked")

    def active_queues(self) -> dict[str, Any] | None:
        return self._request("active_queues")

    def clock(self) -> dict[str, Any] | None:
        """Each worker's logical clock: {hostname: {"clock": n}}."""
        return self._request("clock")

    def report(self) -> dict[str, Any] | None:
        """Versions, platform and settings of each worker, for bug reports: {hostname: {"ok": text}}."""
        return self._request("report")

    def conf(self, with_defaults: bool = False) -> dict[str, Any] | None:
        """Each worker's settings (changed ones, or all with with_defaults=True); secrets masked."""
        return self._request("conf", with_defaults=with_defaults)

    def query_task(self, *ids: Any) -> dict[str, Any] | None:
        """{hostname: {task id: [state, request]}} for the given ids a worker runs ("active") or
        holds ("reserved")."""
        if ids and isinstance(ids[0], (list, tuple)):
            ids = tuple(ids[0])
        return self._request("query_task", ids=[str(i) for i in ids])

    def memsample(self) -> dict[str, Any] | None:
        return self._request("memsample")

    def memdump(self, samples: int = 10) -> dict[str, Any] | None:
        return self._request("memdump", samples=samples)

    def objgraph(self, type: str = "Request", n: int = 200, max_depth: int = 10) -> dict[str, Any] | None:
        """Not supported: every worker answers with an error that says why."""
        return self._request("objgraph", type=type, num=n, max_depth=max_depth)
