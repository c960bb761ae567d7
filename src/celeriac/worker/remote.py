"""Remote control on the worker side: `celeriac inspect ...` / `celeriac control ...`.

Commands are appended to a short-lived log in the result store (which every worker and
client shares; with SQLite or Redis it is the broker's own file or server). The
supervisor of each worker reads new commands on every tick (at most every 0.5 s),
answers them, and acts on the pool. Commands that change how tasks run (rate_limit,
time_limit, add_consumer, cancel_consumer) are also read by each pool process for itself,
because a pool process is a separate process with its own copy of the tasks.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any, Callable

from .. import protocol
from ..exceptions import CeleriacError, OperationalError
from .limits import TIME_LIMIT_OVERRIDES

if TYPE_CHECKING:
    from ..app import Celeriac
    from .consumer import Consumer
    from .supervisor import Worker

logger = logging.getLogger("celeriac.worker")

REPLY_TTL = 60.0
# Commands each pool process applies to itself (the supervisor answers them).
PROCESS_COMMANDS = frozenset({"rate_limit", "time_limit", "add_consumer", "cancel_consumer"})


def for_me(command: dict[str, Any], hostname: str) -> bool:
    destination = command.get("destination")
    return not destination or hostname in destination


def apply_task_settings(app: "Celeriac", command: dict[str, Any]) -> str:
    """rate_limit / time_limit for this process; returns what was done (or why not)."""
    name = command["command"]
    args = command.get("arguments") or {}
    task = app.tasks.get(str(args.get("task_name")))
    if task is None:
        return f"unknown task {args.get('task_name')!r}"
    if name == "rate_limit":
        rate = args.get("rate_limit")
        task.rate_limit = None if rate in (None, "0", 0, "") else str(rate)
        return f"rate limit of {task.name} set to {task.rate_limit or 'none'}"
    TIME_LIMIT_OVERRIDES[task.name] = (args.get("soft"), args.get("hard"))
    return f"time limits of {task.name} set to soft={args.get('soft')} hard={args.get('hard')}"


class ProcessControl:
    """What one pool process (or pool thread) applies to itself from the command log."""

    def __init__(self, consumer: "Consumer", cursor: int, interval: float) -> None:
        self.consumer = consumer
        self.cursor = cursor
        self.interval = interval
        self._last = float("-inf")  # a fresh pool process reads at once what it missed

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        try:
            commands, self.cursor = self.consumer.app.backend.control_since(self.cursor)
        except OperationalError:
            return
        for command in commands:
            if command.get("command") not in PROCESS_COMMANDS or not for_me(command, self.consumer.hostname):
                continue
            name, args = command["command"], command.get("arguments") or {}
            if name in ("rate_limit", "time_limit"):
                apply_task_settings(self.consumer.app, command)
            elif name == "add_consumer" and args.get("queue") not in self.consumer.queues:
                self.consumer.queues = [*self.consumer.queues, str(args["queue"])]
            elif name == "cancel_consumer" and len(self.consumer.queues) > 1:
                self.consumer.queues = [q for q in self.consumer.queues if q != args.get("queue")]


class SupervisorControl:
    """Reads the command log in the worker's main process, answers, and acts on the pool."""

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker
        self.app = worker.app
        self.cursor = 0
        self.started = time.time()

    def start(self) -> None:
        """Only commands sent from now on concern this worker."""
        try:
            _, self.cursor = self.app.backend.control_since(-1)
        except OperationalError as exc:
            logger.warning("cannot read the remote-control log (%s); remote control is off until it works", exc)

    def poll(self) -> None:
        try:
            commands, self.cursor = self.app.backend.control_since(self.cursor)
        except OperationalError:
            return
        hostname = self.worker.options.hostname
        for command in commands:
            if not for_me(command, hostname):
                continue
            name = str(command.get("command"))
            handler: Callable[..., Any] | None = getattr(self, f"do_{name}", None)
            try:
                reply = handler(**(command.get("arguments") or {})) if handler else {
                    "error": f"unknown command {name!r}"}
            except (TypeError, ValueError, CeleriacError) as exc:
                reply = {"error": f"{name}: {exc}"}
            logger.info("remote control: %s -> %s", name, reply if not isinstance(reply, list) else
                        f"{len(reply)} item(s)")
            if command.get("reply_id"):
                try:
                    self.app.backend.control_reply(str(command["reply_id"]), {"hostname": hostname, "reply": reply},
                                                   REPLY_TTL)
                except OperationalError as exc:
                    logger.warning("could not answer remote control command %s: %s", name, exc)

    # --- inspect ---

    def do_ping(self) -> dict[str, str]:
        return {"ok": "pong"}

    def _running(self) -> list[dict[str, Any]]:
        out = []
        for slot in self.worker.slots:
            task_id = bytes(slot.slot.task_id).decode()
            if task_id:
                out.append({"id": task_id, "name": bytes(slot.slot.task_name).decode(),
                            "time_start": slot.slot.started, "hostname": self.worker.options.hostname,
                            "worker_pid": slot.process.pid if slot.process is not None else os.getpid(),
                            "acknowledged": False})
        return out

    def do_active(self) -> list[dict[str, Any]]:
        return self._running()

    def do_reserved(self) -> list[dict[str, Any]] | dict[str, str]:
        held = self.app.broker.held_messages(self.worker.worker_id)
        if held is None:
            return {"error": "this broker cannot list a worker's prefetched messages"}
        running = {r["id"] for r in self._running()}
        out = []
        for _owner, payload in held:
            try:
                msg = protocol.unpack(payload)
            except CeleriacError:
                continue
            if msg.task_id not in running:
                out.append({"id": msg.task_id, "name": msg.task_name, "hostname": self.worker.options.hostname,
                            "eta": msg.headers.get("eta"), "priority": None})
        return out

    def do_scheduled(self) -> list[dict[str, Any]]:
        return []  # ETA tasks wait in the broker until due; no worker holds them

    def do_registered(self) -> list[str]:
        return sorted(name for name, task in self.app.tasks.items() if not task.builtin)

    def do_revoked(self) -> list[str]:
        return sorted(self.worker.revocations.known())

    def do_active_queues(self) -> list[dict[str, str]]:
        return [{"name": q} for q in self.worker.options.queues]

    def do_stats(self) -> dict[str, Any]:
        options = self.worker.options
        return {
            "hostname": options.hostname, "pid": os.getpid(), "uptime": round(time.time() - self.started, 3),
            "broker": self.app.broker.safe_url, "results": self.app.backend.safe_url,
            "pool": {"implementation": options.pool, "max-concurrency": len(self.worker.slots),
                     "processes": [s.process.pid for s in self.worker.slots if s.process is not None]},
            "prefetch_count": options.prefetch_multiplier * len(self.worker.slots),
            "queues": list(options.queues), "total": self.worker.processed_total(),
        }

    # --- control ---

    def do_shutdown(self) -> dict[str, str]:
        self.worker.stop()
        return {"ok": "warm shutdown started"}

    def do_pool_grow(self, n: int = 1) -> dict[str, str]:
        size = self.worker.grow(int(n))
        return {"ok": f"pool now has {size} slot(s)"}

    def do_pool_shrink(self, n: int = 1) -> dict[str, str]:
        size = self.worker.shrink(int(n))
        return {"ok": f"pool now has {size} slot(s)"}

    def do_rate_limit(self, task_name: str, rate_limit: Any = None) -> dict[str, str]:
        # Applied here too, so that pool processes started later inherit it.
        return {"ok": apply_task_settings(self.app, {"command": "rate_limit", "arguments": {
            "task_name": task_name, "rate_limit": rate_limit}})}

    def do_time_limit(self, task_name: str, soft: Any = None, hard: Any = None) -> dict[str, str]:
        return {"ok": apply_task_settings(self.app, {"command": "time_limit", "arguments": {
            "task_name": task_name, "soft": soft, "hard": hard}})}

    def do_add_consumer(self, queue: str) -> dict[str, str]:
        options = self.worker.options
        if queue not in options.queues:
            options.queues = [*options.queues, queue]
        return {"ok": f"consuming from {', '.join(options.queues)}"}

    def do_cancel_consumer(self, queue: str) -> dict[str, str]:
        options = self.worker.options
        if queue in options.queues and len(options.queues) == 1:
            return {"error": f"{queue!r} is the only queue this worker consumes"}
        options.queues = [q for q in options.queues if q != queue]
        return {"ok": f"consuming from {', '.join(options.queues)}"}

    def do_revoke(self, task_id: Any, terminate: bool = False, signal: str | None = None) -> dict[str, str]:
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        self.app.control.revoke(ids, terminate=terminate, signal=signal)
        return {"ok": f"revoked {len(ids)} task(s)"}
