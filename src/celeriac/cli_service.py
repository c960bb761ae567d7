"""Celery's worker and beat options for running as a service (`--logfile`, `--pidfile`,
`--detach`, `--uid`...) and the worker options a Celery command line carries (`-X`, `-I`,
`--purge`, `-O fair`, `--without-gossip`...): a fleet's unit files start celeriac unchanged.

The options are gathered into one `ServiceArgs` (click stores each into the context) so the
commands' own signatures stay short; `ServiceArgs.start` then detaches, drops privileges,
takes the pid file and points the log at the file, in Celery's order.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import click

from . import daemon

if TYPE_CHECKING:
    from .app import Celeriac

F = TypeVar("F", bound=Callable[..., Any])
logger = logging.getLogger("celeriac.worker")


@dataclass
class ServiceArgs:
    logfile: str | None = None
    pidfile: str | None = None
    detach: bool = False
    uid: str | None = None
    gid: str | None = None
    umask: str | None = None
    exclude_queues: str | None = None
    include: str | None = None
    purge: bool = False
    optimization: str | None = None
    without_gossip: bool = False
    without_mingle: bool = False
    without_heartbeat: bool = False
    heartbeat_interval: float | None = None
    statedb: str | None = None
    schedule: str | None = None
    scheduler: str | None = None
    pid_lock: daemon.Pidfile | None = field(default=None, repr=False)

    @classmethod
    def of(cls, ctx: click.Context) -> "ServiceArgs":
        return cls(**ctx.meta.get("celeriac.service", {}))

    def check(self, command: str) -> None:
        """Options that cannot be honoured fail here, before anything starts, naming themselves."""
        if self.scheduler and not self.scheduler.startswith("celeriac"):
            raise click.UsageError(
                f"--scheduler {self.scheduler}: celeriac's {command} keeps its schedule and last runs in the "
                "broker's store (shared by every beat); entries come from app.conf.beat_schedule and "
                "add_periodic_task - see docs/periodic-tasks.md")
        try:
            daemon.parse_umask(self.umask)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--umask") from None

    def queues(self, queues: list[str]) -> list[str]:
        """The queues to consume, less `-X`; all of them excluded is an error."""
        excluded = {q.strip() for q in (self.exclude_queues or "").split(",") if q.strip()}
        kept = [q for q in queues if q not in excluded]
        if not kept:
            raise click.UsageError(f"-X {self.exclude_queues} leaves no queue to consume (from {', '.join(queues)})")
        return kept

    def import_includes(self) -> None:
        """`-I mod1,mod2`: more task modules, imported like the app's `include`."""
        for name in [m.strip() for m in (self.include or "").split(",") if m.strip()]:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                raise click.UsageError(f"-I {name}: cannot import it: {exc}") from None

    def start(self, nodename: str) -> None:
        """Detach, drop privileges, take the pid file - in that order, as Celery does (the pid
        file is the daemon's pid, written as the user it runs as)."""
        if self.detach:
            self.logfile = self.logfile or "%n%I.log"  # a daemon's stderr is /dev/null
            daemon.detach(daemon.parse_umask(self.umask))
        elif self.umask:
            os.umask(daemon.parse_umask(self.umask) or 0)
        try:
            daemon.drop_privileges(self.uid, self.gid)
        except (ValueError, PermissionError) as exc:
            raise click.UsageError(str(exc)) from None
        if self.pidfile:
            # Until the worker or beat installs its own handlers, SIGTERM still removes the file.
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
            self.pid_lock = daemon.Pidfile(daemon.node_format(self.pidfile, nodename))
            try:
                self.pid_lock.acquire()
            except daemon.PidfileError as exc:
                raise click.UsageError(str(exc)) from None

    def stop(self) -> None:
        if self.pid_lock is not None:
            self.pid_lock.release()

    def explain_ignored(self) -> None:
        """Celery options with nothing to do here, said once in the log (never silently)."""
        notes = [
            (self.without_gossip, "--without-gossip: celeriac workers do not gossip; nothing to turn off"),
            (self.without_mingle, "--without-mingle: celeriac workers do not mingle at start-up (revocations are "
                                  "read from the broker's store); nothing to turn off"),
            (bool(self.optimization), f"-O {self.optimization}: each pool process fetches for itself, which is "
                                      "what Celery's -O fair asks for"),
            (bool(self.statedb), f"--statedb {self.statedb}: not needed, revocations are kept in the broker's store"),
            (bool(self.schedule), f"--schedule {self.schedule}: not needed, beat keeps its state in the "
                                  "broker's store"),
        ]
        for applies, note in notes:
            if applies:
                logger.info("%s", note)


def autoscale_option(value: str) -> tuple[int, int]:
    parts = [p.strip() for p in value.split(",")]
    try:
        most, least = int(parts[0]), int(parts[1]) if len(parts) > 1 else 1
    except ValueError:
        raise click.BadParameter(f"{value!r}: use MAX,MIN, e.g. --autoscale 10,2", param_hint="--autoscale") from None
    if least < 1 or most < least:
        raise click.BadParameter(f"{value!r}: need MAX >= MIN >= 1", param_hint="--autoscale")
    return most, least


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def node_name(hostname: str | None) -> str:
    """`-n`, with Celery's %h (host) and %n (its first label); `celeriac@` when no name is given."""
    from .worker.supervisor import default_hostname

    host = default_hostname()
    node = (hostname or f"celeriac@{host}").replace("%h", host).replace("%n", host.split(".")[0])
    return node if "@" in node else f"celeriac@{node}"


def check_urls(app: "Celeriac") -> None:
    """A wrong scheme fails here, naming the URL, without connecting: a process about to
    detach must not fork with connections (or their threads' locks) in hand, and one about to
    change user (--uid) must not make the SQLite files as root first."""
    from . import transports

    transports.implementation(app.broker_url, "broker", "broker URL", "or no URL for the embedded SQLite file")
    transports.implementation(app.result_backend_url, "results", "result backend",
                              "or none for the embedded SQLite file")


def connect(app: "Celeriac", with_beat: bool) -> None:
    """The broker and store made: a wrong scheme fails here, naming the URL."""
    app.broker  # noqa: B018
    app.backend  # noqa: B018
    if with_beat:
        from .beat import schedule_store
        schedule_store(app, str(app.conf.beat_name or app.main or "celeriac"))


def purge_queues(app: "Celeriac", queues: list[str]) -> None:
    """`--purge`: what waits in the worker's queues is deleted before it starts, and counted."""
    removed = app.control.purge(queues)
    logger.warning("--purge: deleted %d waiting message(s) from %s", removed, ", ".join(queues))


def _store(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value not in (None, False, ()):
        ctx.meta.setdefault("celeriac.service", {})[param.name] = value
    return value


def _opt(*decls: str, **kwargs: Any) -> Callable[[F], F]:
    return click.option(*decls, expose_value=False, callback=_store, **kwargs)


def daemon_options(fn: F) -> F:
    """Celery's daemonization options (worker and beat)."""
    for option in reversed([
        _opt("-f", "--logfile", metavar="PATH", help="Log to this file instead of stderr; %n, %h, %I... as "
                                                      "Celery expands them (%I: one file per pool process)."),
        _opt("--pidfile", metavar="PATH", help="Write the process id here; refuse to start while its process runs."),
        _opt("-D", "--detach", is_flag=True, help="Run in the background (logs to --logfile, default %n%I.log)."),
        _opt("--uid", metavar="USER", help="Run as this user (name or id) once started as root."),
        _opt("--gid", metavar="GROUP", help="Run as this group (name or id) once started as root."),
        _opt("--umask", metavar="OCTAL", help="File mode creation mask, e.g. 022."),
        _opt("--executable", hidden=True),  # Celery's re-exec target for --detach; celeriac forks
    ]):
        fn = option(fn)
    return fn


def celery_worker_options(fn: F) -> F:
    """The rest of `celery worker`'s options, so its command lines run unchanged."""
    for option in reversed([
        _opt("-X", "--exclude-queues", metavar="QUEUES", help="Comma-separated queues not to consume."),
        _opt("-I", "--include", metavar="MODULES", help="Comma-separated modules to import (more tasks)."),
        _opt("--purge", "--discard", "purge", is_flag=True,
             help="Delete the messages waiting in this worker's queues before starting."),
        _opt("-O", "optimization", type=click.Choice(["default", "fair"]), help="Accepted; fetching is fair already."),
        _opt("--without-gossip", is_flag=True, help="Accepted; celeriac workers do not gossip."),
        _opt("--without-mingle", is_flag=True, help="Accepted; celeriac workers do not mingle."),
        _opt("--without-heartbeat", is_flag=True,
             help="No worker-heartbeat events (with -E); the liveness heartbeat that keeps tasks' leases stays."),
        _opt("--heartbeat-interval", type=float, help="Seconds between heartbeats (worker_heartbeat_interval)."),
        _opt("-S", "--statedb", hidden=True),
        _opt("-s", "--schedule", "schedule", hidden=True),
        _opt("--scheduler", hidden=True),
    ]):
        fn = option(fn)
    return fn
