"""The `celeriac` command: worker, beat, call, result, purge, dead-letters, inspect, control."""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import platform
import sys
from typing import Any, Callable, Sequence, TypeVar

import click

from . import __version__, daemon, states
from .app import Celeriac, current_app
from .brokers import safe_url
from .cli_service import (ServiceArgs, autoscale_option, celery_worker_options, check_urls, connect,
                          daemon_options, node_name, purge_queues)
from .exceptions import CeleriacError

F = TypeVar("F", bound=Callable[..., Any])


class AppLoadError(click.ClickException):
    exit_code = 1


def load_app(spec: str | None) -> Celeriac:
    """`-A module`, `-A module:attr` or `-A package` (looks for app/celery/celeriac inside)."""
    if not spec:
        return current_app()
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
            raise AppLoadError(f"cannot import module {module_name!r} given with -A: no module named "
                               f"{exc.name!r} (looked in {os.getcwd()} and sys.path)") from None
        raise AppLoadError(f"importing module {module_name!r} given with -A failed: {exc}") from None
    except Exception as exc:
        raise AppLoadError(f"importing module {module_name!r} given with -A failed: "
                           f"{type(exc).__name__}: {exc}") from None
    if attr:
        found = getattr(module, attr, None)
        if not isinstance(found, Celeriac):
            raise AppLoadError(f"{module_name}:{attr} is not a Celeriac app")
        return found
    for name in ("app", "celery", "celeriac"):
        found = getattr(module, name, None)
        if isinstance(found, Celeriac):
            return found
    candidates = [v for v in vars(module).values() if isinstance(v, Celeriac)]
    if candidates:
        return candidates[0]
    if hasattr(module, "__path__"):
        for sub in ("celery", "celeriac", "app"):
            try:
                return load_app(f"{module_name}.{sub}")
            except AppLoadError:
                continue
    raise AppLoadError(f"module {module_name!r} given with -A has no Celeriac app "
                       "(name it `app`, or pass -A module:attribute)")


def friendly_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CeleriacError as exc:
            raise AppLoadError(str(exc)) from None

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-A", "--app", "app_spec", metavar="MODULE", help="Module (or module:attribute) with the app.")
@click.option("-b", "--broker", help="Broker URL (overrides the app's).")
@click.option("--result-backend", help="Result store URL (overrides the app's).")
@click.option("--config", "config_module", metavar="MODULE", envvar=["CELERIAC_CONFIG_MODULE", "CELERY_CONFIG_MODULE"],
              help="Module to read settings from, over the app's own (app.config_from_object(MODULE)).")
@click.option("--workdir", metavar="DIR", help="Change to this directory first (before loading the app).")
@click.option("-q", "--quiet", is_flag=True, help="No start-up banner.")
@click.option("-C", "--no-color", is_flag=True, help="No colours.")
@click.option("--skip-checks", is_flag=True, hidden=True)  # Celery's Django check skip: nothing to skip here
@click.version_option(__version__, prog_name="celeriac")
@click.pass_context
def main(ctx: click.Context, app_spec: str | None, broker: str | None, result_backend: str | None,
         config_module: str | None, workdir: str | None, quiet: bool, no_color: bool, skip_checks: bool) -> None:
    """celeriac: a distributed task queue with Celery's API."""
    ctx.ensure_object(dict)
    if workdir:
        try:
            os.chdir(workdir)
        except OSError as exc:
            raise click.BadParameter(f"{workdir}: {exc.strerror}", param_hint="--workdir") from None
    ctx.obj["quiet"], ctx.obj["color"] = quiet, not no_color
    ctx.obj["config"] = config_module
    ctx.obj["app_spec"] = app_spec
    ctx.obj["broker"] = broker
    ctx.obj["backend"] = result_backend


def _app(ctx: click.Context) -> Celeriac:
    app = ctx.obj.get("app") if not ctx.obj.get("app_spec") else None  # app.start(): the app in hand
    app = app or load_app(ctx.obj.get("app_spec"))
    if ctx.obj.get("config"):
        _apply_config_module(app, ctx.obj["config"])
    if ctx.obj.get("broker"):
        os.environ["CELERIAC_BROKER_URL"] = ctx.obj["broker"]
    if ctx.obj.get("backend"):
        os.environ["CELERIAC_RESULT_BACKEND"] = ctx.obj["backend"]
    if ctx.obj.get("broker") or ctx.obj.get("backend"):
        app._reset_connections()
    return app


def _apply_config_module(app: Celeriac, module_name: str) -> None:
    """`--config MODULE`, as Celery's: its settings win over those the app set itself."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        app.config_from_object(module_name)
    except ModuleNotFoundError as exc:
        raise AppLoadError(f"cannot import the settings module {module_name!r} given with --config: no module "
                           f"named {exc.name!r} (looked in {os.getcwd()} and sys.path)") from None
    except Exception as exc:
        raise AppLoadError(f"reading the settings module {module_name!r} given with --config failed: "
                           f"{type(exc).__name__}: {exc}") from None


# --- worker ---

# Celery's green pools are accepted as names only, to answer with what to use instead.
_POOL_NAMES = ["process", "prefork", "thread", "threads", "solo", "eventlet", "gevent"]

@main.command()
@click.option("-l", "--loglevel", default="WARNING", show_default=True, help="DEBUG, INFO, WARNING, ERROR.")
@click.option("-c", "--concurrency", type=int, default=None, help="Pool size (default: number of CPUs).")
@click.option("-P", "--pool", type=click.Choice(_POOL_NAMES),
              default=None, help="process (default), thread or solo.")
@click.option("-Q", "--queues", default=None, help="Comma-separated queues to consume (default: celery).")
@click.option("-n", "--hostname", default=None, help="Node name (default: celeriac@HOST).")
@click.option("--prefetch-multiplier", type=int, default=None, help="Messages fetched at once per slot.")
@click.option("--time-limit", type=float, default=None,
              help="Hard time limit in seconds for tasks without their own (task_time_limit).")
@click.option("--soft-time-limit", type=float, default=None,
              help="Soft time limit in seconds for tasks without their own (task_soft_time_limit).")
@click.option("--max-tasks-per-child", type=int, default=None,
              help="Replace a pool process after it ran this many tasks (worker_max_tasks_per_child).")
@click.option("--max-memory-per-child", type=int, default=None,
              help="Replace a pool process once its resident memory exceeds this many KiB, after the "
                   "task that took it there (worker_max_memory_per_child).")
@click.option("-E", "--task-events", "task_events", is_flag=True,
              help="Send task and worker events (for `celeriac events` and other monitors).")
@click.option("-B", "--beat", "with_beat", is_flag=True,
              help="Also send periodic tasks (celeriac beat inside this worker; fine for small set-ups).")
@click.option("--autoscale", default=None, metavar="MAX,MIN",
              help="Grow the pool up to MAX slots while messages wait, shrink it to MIN when idle.")
@celery_worker_options
@daemon_options
@click.pass_context
@friendly_errors
def worker(ctx: click.Context, loglevel: str, concurrency: int | None, pool: str | None, queues: str | None,
           hostname: str | None, prefetch_multiplier: int | None, time_limit: float | None,
           soft_time_limit: float | None, max_tasks_per_child: int | None,
           max_memory_per_child: int | None, autoscale: str | None, with_beat: bool, task_events: bool) -> None:
    """Start a worker: `celeriac -A tasks worker --loglevel=info`."""
    from .log import setup_worker_logging
    from .worker.supervisor import WorkerOptions

    if not ctx.obj.get("app_spec") and not ctx.obj.get("app"):
        raise AppLoadError("the worker needs your app: celeriac -A tasks worker (tasks.py defines `app`)")
    service = ServiceArgs.of(ctx)
    service.check("worker")
    app = _app(ctx)
    conf = app.conf
    if time_limit is not None:
        conf.task_time_limit = time_limit
    if soft_time_limit is not None:
        conf.task_soft_time_limit = soft_time_limit
    node = node_name(hostname)
    if not service.detach:  # a detached worker sets its logging up once it is the daemon
        setup_worker_logging(loglevel, conf.worker_log_format, logfile=service.logfile, nodename=node)
    app.import_default_modules()
    service.import_includes()
    app.finalize()
    if pool in ("eventlet", "gevent"):  # Celery's green pools: named, with what to use instead
        raise AppLoadError(f"-P {pool} is not available in celeriac: write I/O-bound tasks as `async def` "
                           "(many run at once on each pool process's event loop) or use -P thread; "
                           "see docs/workers.md#async-def-tasks")
    pool_name = {"prefork": "process", "threads": "thread"}.get(pool or "", pool or conf.worker_pool)
    size = 1 if pool_name == "solo" else (concurrency or conf.worker_concurrency or os.cpu_count() or 1)
    scale = autoscale_option(autoscale) if autoscale and pool_name != "solo" else None
    if scale:
        size = scale[1]
    queue_list = service.queues([q.strip() for q in (queues or conf.task_default_queue).split(",") if q.strip()])
    beat_every = float(service.heartbeat_interval or conf.worker_heartbeat_interval)
    options = WorkerOptions(
        concurrency=size, pool="thread" if pool_name == "solo" else pool_name, queues=queue_list,
        hostname=node, prefetch_multiplier=prefetch_multiplier or conf.worker_prefetch_multiplier,
        shutdown_timeout=float(conf.worker_shutdown_timeout), heartbeat_interval=beat_every,
        # a lease outlives three missed heartbeats, whatever --heartbeat-interval says
        lease_timeout=max(float(conf.worker_lease_timeout), 3 * beat_every),
        max_tasks_per_child=max_tasks_per_child or conf.worker_max_tasks_per_child,
        max_memory_per_child=max_memory_per_child or conf.worker_max_memory_per_child, autoscale=scale,
        beat=with_beat, send_events=task_events or bool(conf.worker_send_task_events),
        heartbeat_events=not service.without_heartbeat)
    if with_beat:  # a bad schedule stops the worker here, with the entry's name, not in a thread later
        from .beat import load_entries
        load_entries(app)
    check_urls(app)  # a wrong URL fails here, before the banner; connections come after --detach and --uid
    if not ctx.obj.get("quiet"):
        print_banner(app, options, pool_name, color=ctx.obj.get("color", True))
    sys.exit(_serve(app, options, service, loglevel))


def _serve(app: Celeriac, options: Any, service: ServiceArgs, loglevel: str) -> int:
    """Detach (--detach), drop privileges, take the pid file, then run the worker until it stops."""
    from .log import setup_worker_logging
    from .worker.supervisor import Worker

    service.start(options.hostname)
    try:
        if service.detach:
            setup_worker_logging(loglevel, app.conf.worker_log_format, logfile=service.logfile,
                                 nodename=options.hostname)
        connect(app, options.beat)  # as the user --uid names: files it makes are that user's
        if service.purge:
            purge_queues(app, options.queues)
        service.explain_ignored()
        daemon.apply_redirect()  # with --logfile, print() in tasks becomes log lines (worker_redirect_stdouts)
        return Worker(app, options).run()
    finally:
        service.stop()


def print_banner(app: Celeriac, options: Any, pool_name: str, color: bool = True) -> None:
    title = f"{options.hostname} v{__version__} ({platform.system()}-{platform.release()} " \
            f"{platform.machine()}, Python {platform.python_version()})"
    rows = [
        ("app", f"{app.main or '__main__'}:{id(app):#x}"),
        ("broker", safe_url(app.broker_url)),
        ("results", safe_url(app.result_backend_url)),
        ("concurrency", f"{options.concurrency} ({pool_name})"),
        ("queues", ", ".join(options.queues)),
    ]
    names = sorted(name for name, task in app.tasks.items() if not task.builtin)
    lines = [f" -------------- {title}"] + [f" - {key + ':':<13}{value}" for key, value in rows]
    lines += ["", " [tasks]"] + [f"   . {name}" for name in names]
    if not names:
        lines.append("   (no tasks registered: does your -A module define any with @app.task?)")
    if color and sys.stdout.isatty():  # colours for people; plain text (and no rich import) for log files
        from rich.console import Console
        from rich.text import Text

        console = Console(soft_wrap=True, highlight=False)
        console.print(Text(lines[0], style="bold green"))
        for line in lines[1:]:
            console.print(Text(line, style="bold" if line.startswith(" [") else ""))
        console.print()
    else:
        print("\n".join(lines) + "\n", flush=True)
    sys.stdout.flush()


@main.command()
@click.option("-l", "--loglevel", default="WARNING", show_default=True, help="DEBUG, INFO, WARNING, ERROR.")
@click.option("--list", "list_only", is_flag=True, help="Show each entry with its last and next run, then exit.")
@click.option("--json", "as_json", is_flag=True, help="With --list: print JSON.")
@click.option("--lease-timeout", type=float, default=None,
              help="Seconds a standby beat waits for a silent leader before taking over (default 10).")
@click.option("--max-interval", type=float, default=None, help="Longest sleep between two looks at the schedule.")
@click.option("-s", "--schedule", "schedule_file", default=None, hidden=True)  # Celery's shelve file: not used
@click.option("-S", "--scheduler", "scheduler_cls", default=None, hidden=True)  # refused in ServiceArgs.check
@daemon_options
@click.pass_context
@friendly_errors
def beat(ctx: click.Context, loglevel: str, list_only: bool, as_json: bool, lease_timeout: float | None,
         max_interval: float | None, schedule_file: str | None, scheduler_cls: str | None) -> None:
    """Send periodic tasks: `celeriac -A tasks beat --loglevel=info`.

    Run one, or two or three for redundancy: they share a lease in the broker's store and
    each tick is sent once."""
    from .beat import Beat
    from .log import setup_worker_logging

    if not ctx.obj.get("app_spec") and not ctx.obj.get("app"):
        raise AppLoadError("beat needs your app: celeriac -A tasks beat (tasks.py sets app.conf.beat_schedule)")
    service = ServiceArgs.of(ctx)
    service.scheduler = scheduler_cls
    service.check("beat")
    app = _app(ctx)
    node = str(app.conf.beat_name or app.main or "celeriac")
    if not service.detach:
        setup_worker_logging(loglevel, app.conf.worker_log_format, logfile=service.logfile, nodename=node)
    app.import_default_modules()
    if list_only:
        _print_beat_list(Beat(app, lease_timeout=lease_timeout, max_interval=max_interval), as_json)
        return
    service.start(node)
    if service.detach:
        setup_worker_logging(loglevel, app.conf.worker_log_format, logfile=service.logfile, nodename=node)
    try:
        _run_beat(app, Beat(app, lease_timeout=lease_timeout, max_interval=max_interval), schedule_file)
    finally:
        service.stop()


def _run_beat(app: Celeriac, scheduler: Any, schedule_file: str | None) -> None:
    import signal

    if schedule_file:
        logging.getLogger("celeriac.beat").info(
            "--schedule %s ignored: beat keeps its state in the broker's store", schedule_file)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: scheduler.stop())
    print(f"celeriac beat v{__version__}: {len(scheduler.entries)} entr"
          f"{'y' if len(scheduler.entries) == 1 else 'ies'}, broker {safe_url(app.broker_url)}, "
          f"time zone {scheduler.tz}", flush=True)
    if not scheduler.entries:
        print("no periodic tasks: set app.conf.beat_schedule or call app.add_periodic_task", flush=True)
    scheduler.run()


@main.command()
@click.option("--dump", is_flag=True, help="Print each event as a line instead of the live view (for pipes).")
@click.option("--json", "as_json", is_flag=True, help="With --dump: one JSON object per line.")
@click.option("--task", "task_filter", default=None, metavar="GLOB", help="Only tasks whose name matches.")
@click.option("--state", "state_filter", default=None, metavar="STATES",
              help="Only tasks in these states (comma-separated: FAILURE,RETRY).")
@click.option("--timeout", type=float, default=None, help="With --dump: stop after this many seconds.")
@click.option("--limit", type=int, default=None, help="With --dump: stop after this many events.")
@click.option("--refresh", type=float, default=0.5, show_default=True, help="Seconds between screen updates.")
@click.pass_context
@friendly_errors
def events(ctx: click.Context, dump: bool, as_json: bool, task_filter: str | None, state_filter: str | None,
           timeout: float | None, limit: int | None, refresh: float) -> None:
    """Watch task and worker events live (workers need -E): `celeriac -A tasks events`."""
    from . import monitor

    app = _app(ctx)
    filters = monitor.Filters(task_filter, state_filter)
    if dump or as_json:
        monitor.dump(app, sys.stdout, as_json, filters, timeout=timeout, limit=limit)
    else:
        monitor.live(app, filters, refresh=max(0.1, refresh))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@friendly_errors
def status(ctx: click.Context, as_json: bool) -> None:
    """Which workers are alive (from their heartbeats); exit status 1 when none is."""
    app = _app(ctx)
    workers = app.control.live_workers()
    if as_json:
        click.echo(json.dumps(workers, indent=2, default=str))
    else:
        for worker_id, info in sorted(workers.items(), key=lambda kv: str(kv[1].get("hostname", kv[0]))):
            queues = ",".join(info.get("queues") or [])
            click.echo(f"-> {info.get('hostname', worker_id)}: OK  pid {info.get('pid', '?')}, "
                       f"{info.get('concurrency', '?')} {info.get('pool', '')} slot(s), queues {queues}")
        count = len(workers)
        click.echo(f"\n{count} node{'s' if count != 1 else ''} online." if count else
                   f"No worker is alive on {safe_url(app.broker_url)} (none renewed its heartbeat lease).")
    if not workers:
        sys.exit(1)


def _print_beat_list(scheduler: Any, as_json: bool) -> None:
    rows = scheduler.listing()
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    lease = scheduler.store.lease_state()
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"beat schedule {scheduler.name!r} (time zone {scheduler.tz})", title_justify="left")
    for column in ("entry", "task", "schedule", "last tick", "next run", "missed"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        due = row["due_in"]
        when = f"{row['next']} (in {_duration(due)})" if due > 0 else f"{row['next']} (due now)"
        table.add_row(row["name"], row["task"], row["schedule"], row["last"] or "never", when, row["missed"])
    # A pipe or a log file gets whole lines (no wrapped names); a terminal gets its own width.
    console = Console(width=None if sys.stdout.isatty() else 240, highlight=False)
    console.print(table)
    console.print(f"leader: {lease.holder} (lease {lease.expires_in:.0f}s left)" if lease.holder
                  else "leader: none (no beat is running)")
    if not rows:
        console.print("no periodic tasks: set app.conf.beat_schedule or call app.add_periodic_task")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] * bool(days) + [f"{hours}h"] * bool(hours) + [f"{minutes}m"] * bool(minutes)
    return " ".join(parts + [f"{secs}s"] * (bool(secs) or not parts))


# --- client commands ---

def _json_arg(value: str | None, name: str, kind: type) -> Any:
    if value is None:
        return kind()
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=name) from None
    if not isinstance(parsed, kind):
        raise click.BadParameter(f"must be a JSON {'array' if kind is list else 'object'}", param_hint=name)
    return parsed


def _show(value: Any) -> str:
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


@main.command()
@click.argument("name")
@click.option("-a", "--args", "args_json", help="Positional arguments as a JSON array, e.g. '[2, 3]'.")
@click.option("-k", "--kwargs", "kwargs_json", help="Keyword arguments as a JSON object.")
@click.option("--countdown", type=float, help="Run no earlier than this many seconds from now.")
@click.option("--eta", help="Run no earlier than this ISO 8601 time.")
@click.option("--expires", type=float, help="Discard if not started within this many seconds.")
@click.option("-Q", "--queue", help="Queue to send to.")
@click.option("--priority", type=int, help="0-9, higher first.")
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
@click.pass_context
@friendly_errors
def call(ctx: click.Context, name: str, args_json: str | None, kwargs_json: str | None, countdown: float | None,
         eta: str | None, expires: float | None, queue: str | None, priority: int | None, wait: bool,
         timeout: float | None) -> None:
    """Send a task by name: `celeriac -A tasks call tasks.add --args '[2, 3]' --wait`."""
    from datetime import datetime

    app = _app(ctx)
    args = _json_arg(args_json, "--args", list)
    kwargs = _json_arg(kwargs_json, "--kwargs", dict)
    try:
        eta_dt = datetime.fromisoformat(eta) if eta else None
    except ValueError:
        raise click.BadParameter(f"{eta!r} is not an ISO 8601 time (e.g. 2026-01-31T09:00:00+00:00)",
                                 param_hint="--eta") from None
    result = app.send_task(name, args, kwargs, countdown=countdown, eta=eta_dt, expires=expires,
                           queue=queue, priority=priority)
    click.echo(result.id)
    if wait:
        try:
            value = result.get(timeout=timeout, propagate=False)
        except CeleriacError as exc:
            raise AppLoadError(f"task {result.id}: {exc}") from None
        click.echo(f"{result.state}: {_show(value) if result.successful() else repr(value)}")
        if not result.successful():
            if result.traceback:
                click.echo(result.traceback, err=True)
            sys.exit(1)


@main.command()
@click.argument("task_id")
@click.option("--traceback", "show_traceback", is_flag=True, help="Print the traceback of a failed task.")
@click.option("--wait", is_flag=True, help="Wait until the task is ready.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
@click.pass_context
@friendly_errors
def result(ctx: click.Context, task_id: str, show_traceback: bool, wait: bool, timeout: float | None) -> None:
    """Show the state and result of a task id."""
    app = _app(ctx)
    res = app.AsyncResult(task_id)
    if wait:
        try:
            res.get(timeout=timeout, propagate=False)
        except CeleriacError as exc:
            raise AppLoadError(str(exc)) from None
    state = res.state
    click.echo(f"state: {state}")
    if state == states.SUCCESS:
        click.echo(f"result: {_show(res.result)}")
    elif state in states.EXCEPTION_STATES:
        click.echo(f"error: {res.result!r}")
        if show_traceback and res.traceback:
            click.echo(res.traceback)
    elif res.info is not None:
        click.echo(f"info: {_show(res.info)}")
    if res.date_done:
        click.echo(f"done: {res.date_done.isoformat()}")


@main.command()
@click.option("-Q", "--queues", default=None, help="Comma-separated queues (default: the app's known queues).")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
@friendly_errors
def purge(ctx: click.Context, queues: str | None, force: bool) -> None:
    """Delete all waiting messages (ready and delayed) from queues."""
    app = _app(ctx)
    names = [q.strip() for q in queues.split(",")] if queues else app.control.known_queues()
    sizes = app.control.queue_sizes(names)
    waiting = sum(s["ready"] + s["delayed"] for s in sizes.values())
    if not waiting:
        click.echo(f"No messages in {', '.join(names)}.")
        return
    if not force:
        click.confirm(f"Delete {waiting} waiting message(s) from {', '.join(names)}?", abort=True)
    removed = app.control.purge(names)
    click.echo(f"Purged {removed} message(s) from {', '.join(names)}.")


@main.command("dead-letters")
@click.option("--requeue", "requeue", multiple=True, help="Put a dead letter back on its queue (id, or 'all').")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, for scripts.")
@click.pass_context
@friendly_errors
def dead_letters(ctx: click.Context, requeue: tuple[str, ...], limit: int, as_json: bool) -> None:
    """List messages the worker gave up on (undecodable, poison), or put them back."""
    from rich.table import Table

    from .protocol import unpack

    app = _app(ctx)
    if requeue:
        ids = None if "all" in requeue else list(requeue)
        click.echo(f"Requeued {app.broker.requeue_dead_letters(ids)} message(s).")
        return
    letters = app.broker.dead_letters(limit)
    if not letters and not as_json:
        click.echo("No dead letters.")
        return
    table = Table("id", "queue", "task", "task id", "deliveries", "reason")
    for letter in letters:
        try:
            msg = unpack(letter.payload)
            name, task_id = msg.task_name, msg.task_id
        except CeleriacError:
            name, task_id = "(undecodable)", "-"
        if as_json:
            click.echo(json.dumps({"id": letter.id, "queue": letter.queue, "task": name, "task_id": task_id,
                                   "deliveries": letter.deliveries, "reason": letter.reason, "at": letter.at}))
        table.add_row(letter.id, letter.queue, name, task_id, str(letter.deliveries), letter.reason)
    if not as_json:
        for column in table.columns[:4]:
            column.no_wrap = True  # ids and names are copied by people: never cut them
        _console().print(table)


def _console() -> Any:
    from rich.console import Console
    return Console(width=None if sys.stdout.isatty() else 200, soft_wrap=False)


def run() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    main(obj={})


def run_for_app(app: Celeriac, argv: Sequence[str]) -> None:
    """`app.start()` / `app.worker_main()`: Celery's `python myapp.py worker -l INFO`, with
    the app already in hand (no -A needed; the pool processes are forked from this one)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    main(args=list(argv), prog_name="celeriac", obj={"app": app})


if __name__ == "__main__":
    run()


from . import cli_remote  # noqa: E402,F401  (inspect and control: registered on `main` by importing them)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                "help_option_names": ["--help"]})
@click.argument("command", required=False)
@click.argument("words", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def multi(ctx: click.Context, command: str | None, words: tuple[str, ...]) -> None:
    """Start, stop and restart several detached workers, as `celery multi` does."""
    from .cli_multi import run_multi  # loaded only for this command

    run_multi(ctx, command, words)

from .dashboard.cli import register as _register_dashboard  # noqa: E402  (its own module: web deps load lazily)

_register_dashboard(main, _app)
