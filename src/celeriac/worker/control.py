"""Your own remote-control commands, as Celery's `celery.worker.control` has them.

    from celeriac.worker.control import control_command, inspect_command

    @inspect_command()
    def current_prefetch_count(state):
        return {"prefetch_count": state.consumer.qos.value}

    @control_command(args=[("n", int)], signature="[N=1]")
    def increase_prefetch_count(state, n=1):
        state.consumer.qos.increment_eventually(n)
        return {"ok": "prefetch count incremented"}

A command is registered when its module is imported: by the worker (the app's module, a
tasks module, or a module named in the `imports` setting) for the worker to answer it, and
by the client for `celeriac inspect NAME` / `celeriac control NAME` to know its arguments.
The worker calls the handler in its main process as `handler(state, **arguments)`; what
`state` offers is `worker.remote.CommandState` (docs/workers.md lists it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

__all__ = ["Panel", "CommandInfo", "control_command", "inspect_command", "ok", "nok"]

Handler = TypeVar("Handler", bound=Callable[..., Any])


@dataclass(frozen=True)
class CommandInfo:
    """What the command line needs to know about a command (Celery's controller_info_t)."""

    alias: str | None = None
    type: str = "control"  # "control" (changes something) or "inspect" (only answers)
    visible: bool = True
    default_timeout: float = 1.0
    help: str | None = None
    signature: str | None = None
    args: Sequence[tuple[str, Callable[[str], Any] | None]] | None = None  # positional CLI args: (name, type)
    variadic: str | None = None  # the keyword that receives the remaining CLI args as a list


class Panel:
    """The registry of remote-control commands.

    `data` holds the handlers registered with the decorators below (a name here wins over a
    built-in command of the same name, as in Celery); `meta` describes the built-in commands
    too, for the command line.
    """

    data: dict[str, Callable[..., Any]] = {}
    meta: dict[str, CommandInfo] = {}

    @classmethod
    def register(cls, *args: Any, **kwargs: Any) -> Any:
        """`Panel.register(fun)` or `@Panel.register(name=..., type=...)`."""
        if args:
            return cls._register(**kwargs)(*args)
        return cls._register(**kwargs)

    @classmethod
    def _register(cls, name: str | None = None, alias: str | None = None, type: str = "control",
                  visible: bool = True, default_timeout: float = 1.0, help: str | None = None,
                  signature: str | None = None, args: Sequence[tuple[str, Any]] | None = None,
                  variadic: str | None = None) -> Callable[[Handler], Handler]:
        if type not in ("control", "inspect"):
            raise ValueError(f"a remote-control command is of type 'control' or 'inspect', not {type!r}")

        def register(fun: Handler) -> Handler:
            command = name or fun.__name__
            summary = help or (fun.__doc__ or "").strip().split("\n")[0]
            cls.data[command] = fun
            cls.meta[command] = CommandInfo(alias, type, visible, default_timeout, summary or None, signature,
                                            list(args) if args else None, variadic)
            if alias:
                cls.data[alias] = fun
            return fun
        return register


def control_command(**kwargs: Any) -> Callable[[Handler], Handler]:
    """Register a command that changes something on the workers (`celeriac control NAME`)."""
    return Panel.register(type="control", **kwargs)  # type: ignore[no-any-return]


def inspect_command(**kwargs: Any) -> Callable[[Handler], Handler]:
    """Register a command that only answers a question (`celeriac inspect NAME`)."""
    return Panel.register(type="inspect", **kwargs)  # type: ignore[no-any-return]


def ok(value: Any) -> dict[str, Any]:
    return {"ok": value}


def nok(value: Any) -> dict[str, Any]:
    return {"error": value}


def _flag(value: str) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on", "y")


def _builtin(name: str, type: str, help: str, signature: str | None = None,
             args: list[tuple[str, Any]] | None = None, variadic: str | None = None) -> None:
    Panel.meta[name] = CommandInfo(None, type, True, 1.0, help, signature, args, variadic)


# The built-in commands (answered by worker/remote.py): described here for the command line.
for _name, _help in [
        ("ping", "Ping the workers."), ("active", "Tasks running now."),
        ("reserved", "Tasks fetched and not started yet."),
        ("scheduled", "ETA tasks held by a worker (always none: they wait in the broker)."),
        ("stats", "Worker statistics."), ("revoked", "Revoked task ids."),
        ("active_queues", "The queues a worker consumes from."), ("clock", "The worker's logical clock."),
        ("report", "Versions and settings, for bug reports."),
        ("memsample", "Sample the resident memory of the worker's main process."),
        ("objgraph", "Not supported (see docs/workers.md).")]:
    _builtin(_name, "inspect", _help)
_builtin("registered", "inspect", "Registered tasks (with the given task attributes).",
         "[attr1 [attr2 [... [attrN]]]]", variadic="taskinfoitems")
_builtin("query_task", "inspect", "Running or prefetched tasks by id.", "[id1 [id2 [... [idN]]]]", variadic="ids")
_builtin("conf", "inspect", "The worker's configuration (passwords hidden).", "[include_defaults=False]",
         args=[("with_defaults", _flag)])
_builtin("memdump", "inspect", "Memory samples taken by memsample, and of every pool process now.", "[n_samples=10]",
         args=[("samples", int)])
_builtin("revoke", "control", "Revoke tasks by id.", "[id1 [id2 [... [idN]]]]", variadic="task_id")
_builtin("rate_limit", "control", "Change a task's rate limit.", "<task_name> <rate_limit (e.g. 5/s | 5/m | 5/h)>",
         args=[("task_name", str), ("rate_limit", str)])
_builtin("time_limit", "control", "Change a task's time limits.", "<task_name> <soft_secs> [hard_secs]",
         args=[("task_name", str), ("soft", float), ("hard", float)])
_builtin("shutdown", "control", "Warm shutdown of the workers.")
_builtin("pool_grow", "control", "Add pool slots.", "[N=1]", args=[("n", int)])
_builtin("pool_shrink", "control", "Remove pool slots.", "[N=1]", args=[("n", int)])
_builtin("add_consumer", "control", "Consume from one more queue.", "<queue>", args=[("queue", str)])
_builtin("cancel_consumer", "control", "Stop consuming from a queue.", "<queue>", args=[("queue", str)])
_builtin("terminate", "control", "Revoke and end running tasks.", "<signal> [id1 [id2 [... [idN]]]]",
         args=[("signal", str)], variadic="task_id")
_builtin("autoscale", "control", "Change the --autoscale range.", "[max [min]]", args=[("max", int), ("min", int)])
_builtin("enable_events", "control", "Say whether task events are on (chosen at start with -E).")
_builtin("disable_events", "control", "Say whether task events are off (chosen at start with -E).")
_builtin("heartbeat", "control", "Send a worker-heartbeat event now (with -E).")
_builtin("pool_restart", "control", "Not supported (restart the worker).")
BUILTIN_COMMANDS = frozenset(Panel.meta)


def compile_arguments(name: str, words: Sequence[str]) -> dict[str, Any]:
    """Command-line words -> the command's keyword arguments, from its registered description."""
    info = Panel.meta[name]
    words = list(words)
    arguments: dict[str, Any] = {}
    positional = list(info.args or [])
    while words and positional:
        key, convert = positional.pop(0)
        word = words.pop(0)
        try:
            arguments[key] = convert(word) if convert is not None else word
        except ValueError as exc:
            raise ValueError(f"{name}: bad value {word!r} for {key}: {exc}") from None
    if info.variadic:
        arguments[info.variadic] = words
    elif words:
        raise ValueError(f"{name} takes arguments: {info.signature or '(none)'}")
    return arguments
