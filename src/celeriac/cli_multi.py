"""`celeriac multi`: start, stop and restart several detached workers by name, as `celery
multi` does - the command Celery's own systemd and init.d examples run, so those unit files
keep working with `celery` replaced by `celeriac`.

    celeriac -A proj multi start w1 w2 -l INFO -c 4 -c:w2 8 --pidfile=/run/celeriac/%n.pid
    celeriac -A proj multi stopwait w1 w2 --pidfile=/run/celeriac/%n.pid

Nodes are names (`w1`, `w1@%h`, `w1@host.example.com`) or a count (`3`: celeriac1..3, or
`--range-prefix` instead of `celeriac`). What follows the nodes are worker options, given to
every node; `-OPT:NODES VALUE` (or `--OPT:NODES=VALUE`) gives one to some nodes only, by name
or by 1-based number, ranges and lists allowed (`-c:1-3 10`, `-Q:w1,w2 images`). Each node
runs `celeriac worker -n NODE --detach` with `--pidfile` (default `%n.pid`) and `--logfile`
(default `%n%I.log`); stop, restart and kill find the nodes by those pid files, so they need the
same `--pidfile` as start.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import click

from . import daemon

# Celery's multi options that are the whole command's, not a worker's
_GLOBAL_WITH_VALUE = {"-A": "--app", "--app": "--app", "-b": "--broker", "--broker": "--broker",
                      "--result-backend": "--result-backend", "--config": "--config", "--workdir": "--workdir"}
_OWN_FLAGS = {"--nosplash", "--quiet", "-q", "--verbose", "--no-color"}  # accepted; the output is always short


@dataclass
class Node:
    name: str  # w1@host
    options: list[tuple[str, str | None]] = field(default_factory=list)
    workdir: str = "."  # where the worker runs (--workdir): its relative pid file is there

    def value(self, option: str, default: str) -> str:
        for opt, val in reversed(self.options):
            if opt == option and val is not None:
                return val
        return default

    @property
    def pidfile(self) -> str:
        path = daemon.node_format(self.value("--pidfile", "%n.pid"), self.name)
        return os.path.abspath(os.path.join(self.workdir, path))

    def pid(self) -> int | None:
        """The pid its pid file names, if that process is alive."""
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        return pid if daemon.alive(pid) else None


@dataclass
class Plan:
    nodes: list[Node]
    global_args: list[str]  # -A proj, -b URL... before `worker`
    sig: int = signal.SIGTERM  # stop's signal: a trailing -KILL, -9, -INT...

    def argv(self, node: Node) -> list[str]:
        opts = [o for o in node.options if o[0] not in ("--pidfile", "--logfile", "-f")]
        worker = ["worker", "-n", node.name, "--detach", f"--pidfile={node.value('--pidfile', '%n.pid')}",
                  f"--logfile={node.value('--logfile', node.value('-f', '%n%I.log'))}"]
        for opt, val in opts:
            if val is None:
                worker.append(opt)
            elif opt.startswith("--"):
                worker.append(f"{opt}={val}")
            else:
                worker += [opt, val]
        return [_executable(), *self.global_args, *worker]


def _executable() -> str:
    script = os.path.join(os.path.dirname(sys.executable), "celeriac")
    return script if os.path.exists(script) else "celeriac"


def _tokens(args: list[str]) -> list[tuple[str, str | None]]:
    """Options as (name, value): `--x=y`, `-x y`, `--x y` (a following word is the value: a
    worker takes no positional arguments) or a flag."""
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-"):
            raise click.UsageError(f"{arg!r}: expected an option here (nodes come first: multi start w1 w2 -c 4)")
        if arg.startswith("--") and "=" in arg:
            name, _, value = arg.partition("=")
            out.append((name, value))
        elif i + 1 < len(args) and not args[i + 1].startswith("-"):
            out.append((arg, args[i + 1]))
            i += 1
        else:
            out.append((arg, None))
        i += 1
    return out


def _selects(selector: str, node_name: str, number: int) -> bool:
    short = node_name.split("@")[0]
    for part in selector.split(","):
        bounds = re.fullmatch(r"(\d+)-(\d+)", part)
        if bounds and int(bounds[1]) <= number <= int(bounds[2]):
            return True
        if part.isdigit() and int(part) == number or part in (short, node_name):
            return True
    return False


def plan(words: list[str], app_spec: str | None) -> Plan:
    """The nodes and each one's worker options, from `NODES... [OPTIONS]`."""
    words = [w for w in words if w not in _OWN_FLAGS]
    split = next((i for i, w in enumerate(words) if w.startswith("-") and not re.fullmatch(r"-\d+", w)), len(words))
    names, options = words[:split], words[split:]
    sig: int = signal.SIGTERM
    if options and _is_signal(options[-1]):  # stop's trailing -TERM, -KILL, -9...
        sig = _signal(options.pop()[1:])
    from .worker.supervisor import default_hostname

    tokens = _tokens(options)
    host = next((v for o, v in tokens if o == "--hostname" and v), None) or default_hostname()
    prefix = next((v for o, v in tokens if o == "--range-prefix" and v), None) or "celeriac"
    if len(names) == 1 and names[0].isdigit():
        names = [f"{prefix}{i}" for i in range(1, int(names[0]) + 1)]
    if not names:
        raise click.UsageError("name the nodes: multi start w1 w2 ... (or a count: multi start 3)")
    global_args = ["-A", app_spec] if app_spec else []
    common: list[tuple[str, str | None]] = []
    scoped: list[tuple[str, str, str | None]] = []
    for opt, val in tokens:
        if opt in ("--hostname", "--range-prefix"):
            continue
        name, _, selector = opt.partition(":")
        if name in _GLOBAL_WITH_VALUE and val is not None and not selector:
            global_args += [_GLOBAL_WITH_VALUE[name], val]
        elif selector:
            scoped.append((selector, name, val))
        else:
            common.append((opt, val))
    nodes = []
    for number, short in enumerate(names, start=1):
        full = short if "@" in short else f"{short}@{host}"
        full = full.replace("%h", default_hostname())
        workdir = global_args[global_args.index("--workdir") + 1] if "--workdir" in global_args else "."
        node = Node(full, list(common), workdir)
        node.options += [(name, val) for selector, name, val in scoped if _selects(selector, full, number)]
        nodes.append(node)
    return Plan(nodes, global_args, sig)


def _is_signal(word: str) -> bool:
    name = word[1:]
    return word.startswith("-") and (name.isdigit() or (name.isupper() and hasattr(signal, f"SIG{name}")))


def _signal(text: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        return int(getattr(signal, text if text.startswith("SIG") else f"SIG{text}"))
    except AttributeError:
        raise click.UsageError(f"-{text}: not a signal name (use -TERM, -INT, -KILL or a number)") from None


# --- the commands ---

def start(p: Plan) -> int:
    click.echo("> Starting nodes...")
    failed = 0
    for node in p.nodes:
        running = node.pid()
        if running:
            click.echo(f"\t> {node.name}: already running (pid {running}, {node.pidfile})")
            continue
        done = subprocess.run(p.argv(node), capture_output=True, text=True)
        ok = done.returncode == 0 and _wait_for(lambda n=node: n.pid() is not None, 30)
        click.echo(f"\t> {node.name}: {'OK' if ok else 'FAILED'}")
        if not ok:
            failed += 1
            reason = (done.stderr or done.stdout).strip().splitlines()
            click.echo(f"\t  {reason[-1] if reason else 'no pid file appeared within 30 s: see its --logfile'}",
                       err=True)
    return 1 if failed else 0


def stop(p: Plan, wait: bool, sig: int | None = None) -> int:
    click.echo("> Stopping nodes...")
    sent: list[tuple[Node, int]] = []
    for node in p.nodes:
        pid = node.pid()
        if pid is None:
            click.echo(f"\t> {node.name}: DOWN (no live process in {node.pidfile})")
            continue
        signum = sig or p.sig
        click.echo(f"\t> {node.name}: {signal.Signals(signum).name} -> {pid}")
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            continue
        sent.append((node, pid))
    if wait:
        for node, pid in sent:
            _wait_for(lambda pid=pid: not daemon.alive(pid), None)  # a warm stop takes what its tasks take
            click.echo(f"\t> {node.name}: OK")
    return 0


def _wait_for(condition: Any, timeout: float | None) -> bool:
    deadline = None if timeout is None else time.monotonic() + timeout
    while not condition():
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


_USAGE = ("celeriac [-A APP] multi start|stop|stopwait|restart|kill|show|names NODES [WORKER OPTIONS] "
          "(NODES: names, or a count)")


def run_multi(ctx: click.Context, command: str | None, words: tuple[str, ...]) -> None:
    """`celeriac multi COMMAND NODES [OPTIONS]` (the command itself is declared in cli.py, so
    this module loads only when it runs)."""
    if command in (None, "help"):
        click.echo(_USAGE + "\n\n" + (__doc__ or ""))
        return
    p = plan(list(words), ctx.obj.get("app_spec"))
    for opt in ("broker", "backend", "config"):
        value = ctx.obj.get(opt)
        if value:
            p.global_args += [{"broker": "--broker", "backend": "--result-backend", "config": "--config"}[opt], value]
    if command == "show":
        click.echo("\n".join(" ".join(p.argv(node)) for node in p.nodes))
    elif command == "names":
        click.echo("\n".join(node.name for node in p.nodes))
    elif command == "start":
        ctx.exit(start(p))
    elif command == "stop":
        ctx.exit(stop(p, wait=False))
    elif command in ("stopwait", "stop_verify"):
        ctx.exit(stop(p, wait=True))
    elif command == "restart":
        stop(p, wait=True)
        ctx.exit(start(p))
    elif command == "kill":
        ctx.exit(stop(p, wait=False, sig=signal.SIGKILL))
    else:
        raise click.UsageError(f"multi {command}: no such command; {_USAGE}")
