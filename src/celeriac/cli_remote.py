"""`celeriac inspect` and `celeriac control`: ask the live workers, or tell them (registered on
the `celeriac` command group when celeriac.cli imports this module)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from .app import Celeriac
from .cli import _app, friendly_errors, main


# --- remote control ---

_CONTROL = ("revoke", "rate_limit", "time_limit", "shutdown", "pool_grow", "pool_shrink", "add_consumer",
            "cancel_consumer")


def _names(destination: str | None) -> list[str] | None:
    return [d.strip() for d in destination.split(",") if d.strip()] if destination else None


def _remote_command(app: Celeriac, name: str | None, kind: str) -> str:
    """The command's name once it is known here (built-in, or registered by the app's modules)."""
    from .worker.control import Panel
    if name is None or Panel.meta.get(name) is None:
        app.import_default_modules()  # a module in `imports` / `include` may register it
    info = Panel.meta.get(name or "")
    if name is None or info is None or info.type != kind:
        known = ", ".join(sorted(n for n, i in Panel.meta.items() if i.type == kind and i.visible))
        what = "missing" if name is None else f"{name!r} is not a known {kind} command"
        raise click.UsageError(f"{kind} command {what}. Available {kind} commands: {known}. Your own commands "
                               "must be registered (control_command / inspect_command) in a module that -A imports.")
    return name


def _list_commands(kind: str) -> None:
    from .worker.control import Panel
    for name, info in sorted(Panel.meta.items()):
        if info.type == kind and info.visible:
            click.echo(f"{name} {info.signature or ''}".strip().ljust(48) + f" {info.help or ''}")


def _remote_arguments(name: str, words: tuple[str, ...]) -> dict[str, Any]:
    from .worker.control import compile_arguments
    try:
        return compile_arguments(name, words)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("what", required=False)
@click.argument("arguments", nargs=-1)
@click.option("-d", "--destination", default=None, help="Comma-separated worker names (default: all).")
@click.option("-t", "--timeout", type=float, default=1.0, show_default=True, help="Seconds to wait for replies.")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print the replies as JSON.")
@click.option("--list", "list_only", is_flag=True, help="List the inspect commands and exit.")
@click.pass_context
@friendly_errors
def inspect(ctx: click.Context, what: str | None, arguments: tuple[str, ...], destination: str | None,
            timeout: float, as_json: bool, list_only: bool) -> None:
    """Ask the live workers: `celeriac -A tasks inspect active` (--list shows every command,
    your own inspect_command ones included)."""
    app = _app(ctx)
    if list_only:
        app.import_default_modules()
        _list_commands("inspect")
        return
    what = _remote_command(app, what, "inspect")
    replies = app.control.inspect(_names(destination), timeout)._request(what, **_remote_arguments(what, arguments))
    _print_replies(what, replies, timeout, as_json)


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("command", required=False)
@click.argument("arguments", nargs=-1)
@click.option("-d", "--destination", default=None, help="Comma-separated worker names (default: all).")
@click.option("-t", "--timeout", type=float, default=1.0, show_default=True, help="Seconds to wait for replies.")
@click.option("--terminate", is_flag=True, help="revoke: also end the task if it is running.")
@click.option("--signal", "signal_name", default="SIGTERM", show_default=True,
              help="revoke --terminate: SIGTERM (raise in the task) or SIGKILL (kill its pool process).")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print the replies as JSON.")
@click.option("--list", "list_only", is_flag=True, help="List the control commands and exit.")
@click.pass_context
@friendly_errors
def control(ctx: click.Context, command: str | None, arguments: tuple[str, ...], destination: str | None,
            timeout: float, terminate: bool, signal_name: str, as_json: bool, list_only: bool) -> None:
    """Tell the live workers what to do: `celeriac -A tasks control rate_limit tasks.add 10/s`.

    \b
    revoke TASK_ID...            [--terminate [--signal SIGKILL]]
    rate_limit TASK RATE         (e.g. 10/s, 100/m; 0 removes it)
    time_limit TASK SOFT [HARD]  (seconds)
    shutdown                     (warm)
    pool_grow [N] / pool_shrink [N]
    add_consumer QUEUE / cancel_consumer QUEUE
    NAME [ARGS]                  your own control_command (see --list)
    """
    app = _app(ctx)
    if list_only:
        app.import_default_modules()
        _list_commands("control")
        return
    command = _remote_command(app, command, "control")
    names = _names(destination)
    ctl = app.control
    from .worker.control import Panel

    def need(count: int, usage: str) -> None:
        if len(arguments) < count:
            raise click.UsageError(f"usage: celeriac control {command} {usage}")

    if command in Panel.data or command not in _CONTROL:  # your own command (or one that replaces a built-in)
        replies = ctl.broadcast(command, _remote_arguments(command, arguments), names, reply=True, timeout=timeout)
    elif command == "revoke":
        need(1, "TASK_ID... [--terminate]")
        ctl.revoke(list(arguments), terminate=terminate, signal=signal_name)
        click.echo(f"Revoked {len(arguments)} task(s){' (running ones are ended)' if terminate else ''}; "
                   "every worker honours it, also workers started later.")
        return
    elif command == "rate_limit":
        need(2, "TASK RATE")
        replies = ctl.rate_limit(arguments[0], arguments[1], names, timeout=timeout)
    elif command == "time_limit":
        need(2, "TASK SOFT [HARD]")
        hard = float(arguments[2]) if len(arguments) > 2 else None
        replies = ctl.time_limit(arguments[0], float(arguments[1]), hard, names, timeout=timeout)
    elif command in ("pool_grow", "pool_shrink"):
        replies = getattr(ctl, command)(int(arguments[0]) if arguments else 1, names, timeout=timeout)
    elif command in ("add_consumer", "cancel_consumer"):
        need(1, "QUEUE")
        replies = getattr(ctl, command)(arguments[0], names, timeout=timeout)
    else:
        replies = ctl.shutdown(names, timeout=timeout)
    merged: dict[str, Any] = {}
    for reply in replies:
        merged.update(reply)
    _print_replies(command, merged or None, timeout, as_json)


def _print_replies(what: str, replies: dict[str, Any] | None, timeout: float, as_json: bool) -> None:
    from rich.table import Table

    if as_json:
        click.echo(json.dumps(replies or {}, indent=2, sort_keys=True, default=str))
        if not replies:
            sys.exit(1)
        return
    if not replies:
        click.echo(f"No worker replied within {timeout:g}s (is one running, on this broker?).", err=True)
        sys.exit(1)
    if what in ("active", "reserved"):
        table = Table("worker", "task id", "task", "started" if what == "active" else "eta", "pid")
        for worker, items in sorted(replies.items()):
            if isinstance(items, dict):
                table.add_row(worker, "-", str(items.get("error", items)), "", "")
                continue
            for item in items or []:
                when = item.get("time_start") if what == "active" else item.get("eta")
                if isinstance(when, (int, float)):
                    when = time.strftime("%H:%M:%S", time.localtime(when))
                table.add_row(worker, item.get("id", ""), item.get("name", ""), str(when or "-"),
                              str(item.get("worker_pid", "")))
            if not items:
                table.add_row(worker, "(none)", "", "", "")
    elif what in ("stats", "conf", "query_task"):
        table = Table("worker", "stat", "value")
        for worker, stats in sorted(replies.items()):
            for key, value in sorted(stats.items()):
                table.add_row(worker, key, json.dumps(value) if isinstance(value, (dict, list)) else str(value))
            if not stats:
                table.add_row(worker, "(none)", "")
    elif what in ("registered", "revoked", "active_queues", "scheduled"):
        table = Table("worker", {"registered": "task", "revoked": "task id", "active_queues": "queue",
                                 "scheduled": "task"}[what])
        for worker, items in sorted(replies.items()):
            for item in items or []:
                table.add_row(worker, item["name"] if isinstance(item, dict) else str(item))
            if not items:
                table.add_row(worker, "(none: ETA tasks wait in the broker)" if what == "scheduled" else "(none)")
    elif what in ("report", "memdump"):  # text of many lines: printed as is
        for worker, reply in sorted(replies.items()):
            text = reply.get("ok") or reply.get("error") if isinstance(reply, dict) else reply
            click.echo(f"{worker}:\n{str(text).rstrip()}")
        click.echo(f"{len(replies)} worker(s) replied.")
        return
    else:
        table = Table("worker", "reply")
        for worker, reply in sorted(replies.items()):
            known = isinstance(reply, dict) and set(reply) <= {"ok", "error"} and reply
            text = (reply.get("ok") or reply.get("error")) if known else reply
            table.add_row(worker, text if isinstance(text, str) else json.dumps(text, sort_keys=True, default=str))
    for column in table.columns[: 3 if len(table.columns) > 2 else 1]:
        column.no_wrap = True
    from rich.console import Console
    # Replies are data, not markup: "name [rate_limit=10/s]" must print as it is.
    Console(width=None if sys.stdout.isatty() else 200, soft_wrap=False, markup=False).print(table)
    click.echo(f"{len(replies)} worker(s) replied.")
