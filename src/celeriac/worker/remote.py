"""Remote control on the worker side: `celeriac inspect ...` / `celeriac control ...`.

Commands are appended to a short-lived log in the result store (which every worker and
client shares; with SQLite or Redis it is the broker's own file or server). The
supervisor of each worker reads new commands on every tick (at most every 0.5 s),
answers them, and acts on the pool. Commands that change how tasks run (rate_limit,
time_limit, add_consumer, cancel_consumer) are also read by each pool process for itself,
because a pool process is a separate process with its own copy of the tasks.

Commands registered with `celeriac.worker.control.control_command` / `inspect_command`
are answered here too: `handler(state, **arguments)` with `state` from command_state.py.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Callable

from .. import protocol, states
from ..exceptions import CeleriacError, OperationalError
from . import introspect, slotinfo
from .command_state import SET_PREFETCH, CommandState
from .control import Panel
from .limits import TIME_LIMIT_OVERRIDES

if TYPE_CHECKING:
    from ..app import Celeriac
    from .consumer import Consumer
    from .supervisor import Worker

logger = logging.getLogger("celeriac.worker")

REPLY_TTL = 60.0
# Commands each pool process applies to itself (the supervisor answers them).
PROCESS_COMMANDS = frozenset({"rate_limit", "time_limit", "add_consumer", "cancel_consumer", SET_PREFETCH})
# Celery's default `registered()` shows these task attributes when a task has them set.
DEFAULT_TASK_INFO_ITEMS = ("exchange", "routing_key", "rate_limit")
MEMSAMPLES_KEPT = 1000


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


def jsonable(value: Any) -> Any:
    """A handler's reply as JSON can carry it: sets become lists, anything else unknown its repr."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=lambda o: sorted(o, key=repr) if isinstance(
            o, (set, frozenset)) else o.isoformat() if hasattr(o, "isoformat") else repr(o)))


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
        backend, revocations = self.consumer.app.backend, self.consumer.revocations
        try:
            if revocations.due(now):  # both logs in one call (one round trip on a networked store)
                (commands, self.cursor), (revoked, cursor) = backend.follow_logs(self.cursor, revocations.cursor)
                revocations.take(revoked, cursor, now)
            else:
                commands, self.cursor = backend.control_since(self.cursor)
        except OperationalError:
            return  # the revocations' own read reports it (the task's revocation check reads them)
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
            elif name == SET_PREFETCH and args.get("worker_id") == self.consumer.worker_id:
                self.consumer.prefetch = max(1, int(args.get("prefetch") or 1))
                logger.info("pool slot %s: prefetch count now %d", self.consumer.owner, self.consumer.prefetch)


class SupervisorControl:
    """Reads the command log in the worker's main process, answers, and acts on the pool."""

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker
        self.app = worker.app
        self.cursor = 0
        self.started = time.time()
        self.clock = 0  # a logical clock: forwarded by every command this worker receives
        self._state: CommandState | None = None
        self._memsamples: list[int | None] = []
        self._accept = protocol.accepted_types(self.app.conf.accept_content)

    @property
    def state(self) -> CommandState:
        if self._state is None:
            self._state = CommandState(self.worker, self)
        return self._state

    def start(self) -> None:
        """Only commands sent from now on concern this worker."""
        try:
            _, self.cursor = self.app.backend.control_since(-1)
        except OperationalError as exc:
            logger.warning("cannot read the remote-control log (%s); remote control is off until it works", exc)
        custom = sorted(name for name in Panel.data)
        if custom:
            logger.info("custom remote-control commands: %s", ", ".join(custom))

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
            if name == SET_PREFETCH:  # for the pool processes only
                continue
            self.clock += 1
            reply = self.dispatch(name, command.get("arguments") or {})
            logger.info("remote control: %s -> %s", name, reply if not isinstance(reply, list) else
                        f"{len(reply)} item(s)")
            if command.get("reply_id"):
                try:
                    self.app.backend.control_reply(str(command["reply_id"]),
                                                   {"hostname": hostname, "reply": jsonable(reply)}, REPLY_TTL)
                except OperationalError as exc:
                    logger.warning("could not answer remote control command %s: %s", name, exc)

    def dispatch(self, name: str, arguments: dict[str, Any]) -> Any:
        custom = Panel.data.get(name)
        if custom is not None:  # registered by the user: wins over a built-in of the same name, as in Celery
            try:
                return custom(self.state, **arguments)
            except Exception as exc:
                logger.exception("remote-control command %r raised", name)
                return {"error": f"{name}: {exc!r}"}
        handler: Callable[..., Any] | None = getattr(self, f"do_{name}", None)
        if handler is None:
            return {"error": f"unknown command {name!r}: is the module that registers it imported by the worker?"}
        try:
            return handler(**arguments)
        except (TypeError, ValueError, CeleriacError) as exc:
            return {"error": f"{name}: {exc}"}

    # --- inspect ---

    def do_ping(self, **_: Any) -> dict[str, str]:
        return {"ok": "pong"}

    def do_clock(self, **_: Any) -> dict[str, int]:
        return {"clock": self.clock}

    def _request_info(self, task_id: str, name: str, info: dict[str, Any], *, time_start: float | None,
                      worker_pid: int | None) -> dict[str, Any]:
        """One request as Celery's `Request.info()` describes it."""
        return {"id": task_id, "name": name, "args": info.get("args"), "kwargs": info.get("kwargs"),
                "type": name, "hostname": self.worker.options.hostname, "time_start": time_start,
                "acknowledged": False,  # celeriac acknowledges a message only once its task finished
                "delivery_info": info.get("delivery_info") or {}, "worker_pid": worker_pid}

    def _running(self) -> list[dict[str, Any]]:
        out = []
        for slot in self.worker.slots:
            task_id = bytes(slot.slot.task_id).decode()
            if task_id:
                info = slotinfo.read_info(slot.slot, task_id, self._accept)
                out.append(self._request_info(
                    task_id, bytes(slot.slot.task_name).decode(), info,
                    time_start=slot.slot.started,
                    worker_pid=self.worker.pool.pid(slot)))
        return out

    def do_active(self, safe: bool = False, **_: Any) -> list[dict[str, Any]]:
        return self._running()

    def _held(self) -> list[dict[str, Any]] | None:
        """Prefetched messages not started yet, as requests; None where the broker cannot tell."""
        held = self.app.broker.held_messages(self.worker.worker_id)
        if held is None:
            return None
        running = {bytes(s.slot.task_id).decode() for s in self.worker.slots}
        out = []
        for _owner, payload in held:
            try:
                msg = protocol.unpack(payload)
                args, kwargs, _embed = protocol.decode_body(msg, self._accept)
            except CeleriacError:
                continue
            if msg.task_id in running:
                continue
            props = msg.properties
            delivery = {"exchange": "", "routing_key": (props.get("delivery_info") or {}).get("routing_key"),
                        "priority": props.get("priority"), "redelivered": False}
            request = self._request_info(msg.task_id, msg.task_name,
                                         {"args": list(args), "kwargs": kwargs, "delivery_info": delivery},
                                         time_start=None, worker_pid=None)
            request["eta"], request["priority"] = msg.headers.get("eta"), props.get("priority")
            out.append(request)
        return self._not_finished(out)

    def _not_finished(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Without those that ran meanwhile: a task that just finished leaves its slot before its
        message is acknowledged (with the batch), and it was never waiting."""
        if not requests:
            return requests
        try:
            metas = self.app.backend.get_many([r["id"] for r in requests])
        except OperationalError:
            return requests
        return [r for r in requests if (metas.get(r["id"]) or {}).get("status") not in states.READY_STATES]

    def do_reserved(self, **_: Any) -> list[dict[str, Any]] | dict[str, str]:
        held = self._held()
        if held is None:
            return {"error": "this broker cannot list a worker's prefetched messages"}
        return held

    def do_query_task(self, ids: Any = None, **_: Any) -> dict[str, Any]:
        """Celery's {task id: [state, request]} for the given ids this worker runs or holds."""
        wanted = {ids} if isinstance(ids, str) else {str(i) for i in ids or ()}
        found: dict[str, Any] = {r["id"]: ["active", r] for r in self._running() if r["id"] in wanted}
        for request in self._held() or []:
            if request["id"] in wanted and request["id"] not in found:
                found[request["id"]] = ["reserved", request]
        return found

    def do_scheduled(self, **_: Any) -> list[dict[str, Any]]:
        return []  # ETA tasks wait in the broker until due; no worker holds them

    def do_registered(self, taskinfoitems: Any = None, builtins: bool = False, **_: Any) -> list[str]:
        """Task names, each with the asked-for task attributes that are set: "name [rate_limit=10/s]"."""
        items = [taskinfoitems] if isinstance(taskinfoitems, str) else list(taskinfoitems or DEFAULT_TASK_INFO_ITEMS)
        out = []
        for name, task in sorted(self.app.tasks.items()):
            if task.builtin and not builtins:
                continue
            fields = [f"{item}={getattr(task, item)}" for item in items if getattr(task, item, None) is not None]
            out.append(f"{name} [{' '.join(fields)}]" if fields else name)
        return out

    def do_revoked(self, **_: Any) -> list[str]:
        return sorted(self.worker.revocations.known())

    def do_active_queues(self, **_: Any) -> list[dict[str, Any]]:
        """The consumed queues, with the keys of Celery's queue description."""
        return [{"name": q, "exchange": {"name": "", "type": "direct", "arguments": None, "durable": True,
                                         "passive": False, "auto_delete": False, "delivery_mode": None,
                                         "no_declare": False},
                 "routing_key": q, "queue_arguments": None, "binding_arguments": None, "consumer_arguments": None,
                 "durable": True, "exclusive": False, "auto_delete": False, "no_ack": False, "alias": None,
                 "bindings": [], "no_declare": None, "expires": None, "message_ttl": None, "max_length": None,
                 "max_length_bytes": None, "max_priority": 9} for q in self.worker.options.queues]

    def pool_info(self) -> dict[str, Any]:
        options, conf = self.worker.options, self.app.conf
        return {"implementation": options.pool, "max-concurrency": len(self.worker.slots),
                "processes": self.worker.pool.pids(),
                "max-tasks-per-child": options.max_tasks_per_child or "N/A",
                "max-memory-per-child": options.max_memory_per_child or "N/A",
                "put-guarded-by-semaphore": False,
                "timeouts": [conf.task_soft_time_limit or 0, conf.task_time_limit or 0],
                "autoscale": list(options.autoscale) if options.autoscale else None}

    def do_stats(self, **_: Any) -> dict[str, Any]:
        options = self.worker.options
        return {
            "hostname": options.hostname, "pid": os.getpid(), "clock": str(self.clock),
            "uptime": int(time.time() - self.started), "total": self.worker.pool.totals_by_name(),
            "processed": self.worker.pool.processed_total(),
            "pool": self.pool_info(),
            "broker": introspect.broker_info(self.app.broker_url, self.app.conf.broker_transport_options),
            "results": self.app.backend.safe_url,
            "prefetch_count": self.state.consumer.qos.value,
            "queues": list(options.queues), "rusage": introspect.rusage(),
        }

    def do_conf(self, with_defaults: Any = False, **_: Any) -> dict[str, Any]:
        if isinstance(with_defaults, str):
            with_defaults = with_defaults.strip().lower() in ("1", "true", "yes", "on")
        return introspect.conf_table(self.app, bool(with_defaults))

    def do_dump_conf(self, **kwargs: Any) -> dict[str, Any]:
        return self.do_conf(**kwargs)

    def do_report(self, **_: Any) -> dict[str, str]:
        return {"ok": introspect.report(self.app, self.worker.options.pool, len(self.worker.slots))}

    def do_memsample(self, **_: Any) -> str:
        """Resident memory of the main process now (Celery's format), also kept for memdump."""
        rss = introspect.resident_bytes(os.getpid())
        self._memsamples = [*self._memsamples[-(MEMSAMPLES_KEPT - 1):], rss]
        return introspect.human_bytes(rss)

    def do_memdump(self, samples: Any = 10, **_: Any) -> str:
        """The samples taken since the last memdump, then every process's memory now."""
        taken, self._memsamples = self._memsamples, []
        step = max(1, len(taken) // max(1, int(samples)))
        lines = ["- rss (sample):"] + [f"-    > {introspect.human_bytes(m)}," for m in taken[::step]] if taken else []
        lines.append(f"- rss (end): {introspect.human_bytes(introspect.resident_bytes(os.getpid()))}.")
        for pid in self.worker.pool.pids():
            lines.append(f"- pool process {pid}: {introspect.human_bytes(introspect.resident_bytes(pid))}.")
        return "\n".join(lines) + "\n"

    def do_objgraph(self, **_: Any) -> dict[str, str]:
        return {"error": "objgraph is not supported: the worker's main process runs no task (a leak lives in a "
                         "pool process), and it would draw a PNG on the worker's disk. Use memdump, or "
                         "--max-memory-per-child to replace pool processes that grow."}

    # --- control ---

    def do_shutdown(self, **_: Any) -> dict[str, str]:
        self.worker.stop()
        return {"ok": "warm shutdown started"}

    def do_pool_grow(self, n: int = 1, **_: Any) -> dict[str, str]:
        size = self.worker.pool.grow(int(n))
        return {"ok": f"pool now has {size} slot(s)"}

    def do_pool_shrink(self, n: int = 1, **_: Any) -> dict[str, str]:
        size = self.worker.pool.shrink(int(n))
        return {"ok": f"pool now has {size} slot(s)"}

    def do_rate_limit(self, task_name: str, rate_limit: Any = None, **_: Any) -> dict[str, str]:
        # Applied here too, so that pool processes started later inherit it.
        return {"ok": apply_task_settings(self.app, {"command": "rate_limit", "arguments": {
            "task_name": task_name, "rate_limit": rate_limit}})}

    def do_time_limit(self, task_name: str, soft: Any = None, hard: Any = None, **_: Any) -> dict[str, str]:
        return {"ok": apply_task_settings(self.app, {"command": "time_limit", "arguments": {
            "task_name": task_name, "soft": soft, "hard": hard}})}

    def do_add_consumer(self, queue: str, **_: Any) -> dict[str, str]:
        options = self.worker.options
        if queue not in options.queues:
            options.queues = [*options.queues, queue]
        return {"ok": f"consuming from {', '.join(options.queues)}"}

    def do_cancel_consumer(self, queue: str, **_: Any) -> dict[str, str]:
        options = self.worker.options
        if queue in options.queues and len(options.queues) == 1:
            return {"error": f"{queue!r} is the only queue this worker consumes"}
        options.queues = [q for q in options.queues if q != queue]
        return {"ok": f"consuming from {', '.join(options.queues)}"}

    def do_terminate(self, signal: str = "SIGTERM", task_id: Any = (), **_: Any) -> dict[str, str]:
        return self.do_revoke(task_id, terminate=True, signal=signal)

    def do_autoscale(self, max: Any = None, min: Any = None, **_: Any) -> dict[str, str]:
        current = self.worker.options.autoscale
        if not current:
            return {"error": "autoscale is not enabled on this worker (start it with --autoscale MAX,MIN)"}
        most = int(max) if max is not None else current[0]
        least = int(min) if min is not None else current[1]
        if not 1 <= least <= most:
            return {"error": f"autoscale needs 1 <= min <= max, got max={most} min={least}"}
        self.worker.options.autoscale = (most, least)
        return {"ok": f"autoscale now max={most} min={least}"}

    def do_enable_events(self, **_: Any) -> dict[str, str]:
        if self.worker.events.enabled:
            return {"ok": "task events already enabled"}
        return {"error": "task events are chosen when the worker starts: restart it with -E"}

    def do_disable_events(self, **_: Any) -> dict[str, str]:
        if self.worker.events.enabled:
            return {"error": "task events are chosen when the worker starts: restart it without -E"}
        return {"ok": "task events already disabled"}

    def do_heartbeat(self, **_: Any) -> dict[str, str]:
        if not self.worker.events.enabled:
            return {"error": "this worker sends no events (start it with -E)"}
        self.worker.worker_event("worker-heartbeat")
        return {"ok": "heartbeat sent"}

    def do_pool_restart(self, **_: Any) -> dict[str, str]:
        return {"error": "pool_restart is not supported: restart the worker (a warm stop loses nothing), or use "
                         "--max-tasks-per-child to replace pool processes"}

    def do_revoke(self, task_id: Any, terminate: bool = False, signal: str | None = None,
                  **_: Any) -> dict[str, str]:
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        self.app.control.revoke(ids, terminate=terminate, signal=signal)
        return {"ok": f"revoked {len(ids)} task(s)"}
