#!/usr/bin/env python3
"""celeriac and Celery side by side on one local Redis (stdlib only; system python3 or the project venv).

    bash benchmarks/compare_celery.sh [--n 10000] [--lat 500] [--rounds 2] [--out FILE] [--skip-setup]
    bash benchmarks/compare_celery.sh --transport amqp [...]     # RabbitMQ broker, Redis result store

`--transport amqp` (default `redis`, described below) starts ONE private RabbitMQ node as well (free loopback ports,
own temp dir, no plugins, stopped by its process group at the end) and runs both systems with broker
amqp://guest:guest@127.0.0.1:PORT/<vhost> and result backend redis://127.0.0.1:REDISPORT/0; every system run gets a
fresh vhost (rabbitmqctl add_vhost + set_permissions for guest; delete_vhost afterwards) and a FLUSHALLed Redis.

1. Celery goes into its own venv, benchmarks/.venv-celery (`pip install -U "celery[redis]" hiredis`, latest PyPI
   releases; created from the project venv's interpreter so both run the same Python). `--skip-setup` skips pip.
   celeriac runs from the project venv (.venv, with `pip install -e .[redis]`).
2. ONE fresh `redis-server` on a free 127.0.0.1 port (`--save '' --appendonly no`, its own temp dir); broker and
   result backend are both redis://127.0.0.1:PORT/0; FLUSHALL before each system; stopped at the end.
3. Per round (order alternates: celeriac first in odd rounds, Celery first in even ones) and per system, with the
   same client code (peer_client.py, run by the system's venv python, `import benchtasks` from a per-system temp dir):
   enqueue N `add.delay(i, i)` with no worker running (enqueue/s) -> start the worker (`-c 2`) -> read all N results
   in order, non-blocking `ready()` + 2 ms sleep when not ready, values checked (tasks/s = N / (last result - worker
   start)) -> 10 warm-ups + LAT sequential `add.delay(k, 1).get(timeout=10)` (p50/p99, nearest rank) -> RSS and PSS
   of the worker's process tree (/proc/<pid>/smaps_rollup) -> SIGTERM, SIGKILL after 10 s, and a check that no
   worker process survived.
4. Prints a markdown report and writes it to --out (default /tmp/celeriac-vs-celery-<time>.md); logs, raw JSON and
   the generated benchtasks.py files stay in the run directory printed at the end.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLIENT = HERE / "peer_client.py"
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL

SYSTEMS = ("celeriac", "Celery")

TASKS = {
    "celeriac": textwrap.dedent("""\
        import os
        from celeriac import Celeriac

        URL = os.environ["BENCH_REDIS_URL"]
        app = Celeriac("bench", broker=URL, backend=URL)


        @app.task
        def add(x, y):
            return x + y
        """),
    "Celery": textwrap.dedent("""\
        import os
        from celery import Celery

        URL = os.environ["BENCH_REDIS_URL"]
        app = Celery("bench", broker=URL, backend=URL)  # all app settings at their defaults


        @app.task
        def add(x, y):
            return x + y
        """),
}

# --transport amqp: broker and result store are two different servers (RabbitMQ, Redis)
TASKS_AMQP = {
    "celeriac": textwrap.dedent("""\
        import os
        from celeriac import Celeriac

        BROKER = os.environ["BENCH_BROKER_URL"]    # amqp://guest:guest@127.0.0.1:PORT/<vhost>
        BACKEND = os.environ["BENCH_BACKEND_URL"]  # redis://127.0.0.1:PORT/0
        app = Celeriac("bench", broker=BROKER, backend=BACKEND)


        @app.task
        def add(x, y):
            return x + y
        """),
    "Celery": textwrap.dedent("""\
        import os
        from celery import Celery

        BROKER = os.environ["BENCH_BROKER_URL"]    # amqp://guest:guest@127.0.0.1:PORT/<vhost>
        BACKEND = os.environ["BENCH_BACKEND_URL"]  # redis://127.0.0.1:PORT/0
        app = Celery("bench", broker=BROKER, backend=BACKEND)  # all app settings at their defaults


        @app.task
        def add(x, y):
            return x + y
        """),
}

CELERY_WORKER_FLAGS = ["--pool", "prefork", "--loglevel=warning", "--without-gossip", "--without-mingle",
                       "--without-heartbeat"]

CONFIG = {
    "celeriac": "project venv (`pip install -e .[redis]`, hiredis installed); `Celeriac('bench', broker=URL, "
                "backend=URL)`, nothing else configured; worker `celeriac -A benchtasks worker -c 2 "
                "--loglevel=warning` (its default process pool, prefetch and acknowledgement); `.get()` waits with its "
                "default blocking BLMOVE on the task's 'done' list.",
    "Celery": "`pip install -U \"celery[redis]\" hiredis` into benchmarks/.venv-celery; `Celery('bench', broker=URL, "
              "backend=URL)`, no app setting changed (prefetch multiplier 4, early acks, json serializer, Redis result "
              "backend whose `.get()` waits on pub/sub); worker `celery -A benchtasks worker -c 2 "
              + " ".join(CELERY_WORKER_FLAGS) + "`. Non-default flags and why: `--pool prefork` is the default pool, "
              "named explicitly; `--without-mingle` skips the start-up sync round with other workers (there are none; "
              "it would be charged to the throughput phase, which includes worker start-up); `--without-gossip` and "
              "`--without-heartbeat` turn off cluster event chatter (gossip subscription, heartbeat events every 2 s) "
              "that only matters with several workers or a monitor — celeriac sends no such events. "
              "`--loglevel=warning` as for celeriac. These are the same settings as ../shared/bench-peers.",
}


CONFIG_AMQP = {
    "celeriac": "project venv (`pip install -e .[redis,amqp]`: pika and hiredis installed); `Celeriac('bench', "
                "broker=AMQP_URL, backend=REDIS_URL)`, nothing else configured (its RabbitMQ transport: durable queue "
                "with `x-max-priority` 9, persistent messages, publisher confirms on every `.delay()`); worker "
                "`celeriac -A benchtasks worker -c 2 --loglevel=warning` (its default process pool, prefetch and "
                "acknowledgement); `.get()` waits with its default blocking BLMOVE on the task's 'done' list in Redis.",
    "Celery": "`pip install -U \"celery[redis]\" hiredis` into benchmarks/.venv-celery (kombu brings py-amqp, Celery's "
              "default amqp transport; nothing else needed); `Celery('bench', broker=AMQP_URL, backend=REDIS_URL)`, no "
              "app setting changed (py-amqp transport, durable classic queue, persistent messages, no publisher "
              "confirms, prefetch multiplier 4, early acks, json serializer, Redis result backend whose `.get()` waits "
              "on pub/sub); worker `celery -A benchtasks worker -c 2 " + " ".join(CELERY_WORKER_FLAGS) + "` — the same "
              "flags as in the Redis mode (`--pool prefork` is the default pool, named explicitly; `--without-mingle` "
              "skips the start-up sync round with other workers; `--without-gossip` and `--without-heartbeat` turn off "
              "cluster event traffic that only matters with several workers or a monitor; the worker still declares "
              "its remote-control pidbox queue).",
}


# ---------------------------------------------------------------- small helpers


def workload_text(args: argparse.Namespace, result_wait: str) -> str:
    """The workload paragraph of the report: the same phases in every transport mode."""
    return (
        f"Workload (same client code for both, benchmarks/peer_client.py): N = {args.n:,} no-op tasks "
        f"`add.delay(i, i)` sent one by one with no worker running (**enqueue/s**); then the worker (`-c "
        f"{args.concurrency}`) is started and all N results are read in order with a non-blocking `ready()` and a "
        f"2 ms sleep when not ready, every value checked (**tasks/s** = N / (last result readable − worker start), "
        f"worker start-up included); then 10 untimed warm-ups and {args.lat} sequential "
        f"`add.delay(k, 1).get(timeout=10)` round trips on the idle worker (**p50 / p99**, nearest rank; each "
        f"system's default result wait{result_wait}). **RSS / PSS** = sum over the worker's process tree (main "
        f"process + pool children) from /proc/<pid>/smaps_rollup, 0.5 s after the last round trip; RSS counts pages "
        f"shared by forked children once per process, PSS splits them. Worker stopped with SIGTERM (SIGKILL after "
        f"{STOP_GRACE:.0f} s). Run order alternates per round.")


def log(msg: str) -> None:
    print(msg, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_cmd(port: int, *args: str, timeout: float = 30.0) -> object:
    """One command over RESP on a fresh connection (stdlib only)."""
    payload = f"*{len(args)}\r\n".encode()
    for a in args:
        b = a.encode()
        payload += b"$%d\r\n%s\r\n" % (len(b), b)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        f = s.makefile("rb")
        line = f.readline()
        kind, rest = line[:1], line[1:].rstrip(b"\r\n")
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(f"redis error: {rest.decode()}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else f.read(size + 2)[:-2].decode()
        raise RuntimeError(f"unexpected redis reply {line!r}")


def redis_info(port: int, section: str) -> dict[str, str]:
    text = str(redis_cmd(port, "INFO", section))
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, session id) or None if gone."""
    try:
        s = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[4])


def all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def tree(root: int) -> list[int]:
    """root and all its descendants (zombies left out)."""
    kids: dict[int, list[int]] = {}
    for p in all_pids():
        st = proc_stat(p)
        if st and st[0] != "Z":
            kids.setdefault(st[1], []).append(p)
    out, stack = [], [root]
    while stack:
        p = stack.pop()
        st = proc_stat(p)
        if st and st[0] != "Z":
            out.append(p)
        stack.extend(kids.get(p, []))
    return out


def alive(pid: int) -> bool:
    st = proc_stat(pid)
    return st is not None and st[0] != "Z"


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes in session `sid` (the worker is started as a session leader)."""
    out = []
    for p in all_pids():
        st = proc_stat(p)
        if st and st[0] != "Z" and st[2] == sid:
            out.append(p)
    return out


def memory_mb(pids: list[int]) -> tuple[float, float]:
    rss = pss = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return rss / 1024, pss / 1024


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def readline_until(stream, deadline: float) -> str | None:  # type: ignore[no-untyped-def]
    buf = b""
    fd = stream.fileno()
    while True:
        left = deadline - time.time()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        ch = os.read(fd, 1)
        if not ch:
            return buf.decode() if buf else None
        if ch == b"\n":
            return buf.decode()
        buf += ch


def stop_worker(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """SIGTERM the worker's main process, SIGKILL whatever of its tree/session is left after STOP_GRACE seconds,
    then verify nothing survived. Returns timing and what had to be killed."""
    members = set(tree(proc.pid)) | set(session_members(proc.pid))

    def left() -> list[int]:
        return sorted(p for p in members | set(session_members(proc.pid)) if alive(p))

    t = time.time()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    killed: list[int] = []
    while time.time() - t < STOP_GRACE:
        if proc.poll() is not None and not left():
            break
        time.sleep(0.02)
    else:
        for p in left():
            try:
                os.kill(p, signal.SIGKILL)
                killed.append(p)
            except ProcessLookupError:
                pass
    stop_s = time.time() - t
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    time.sleep(0.1)
    return {"stop_s": stop_s, "sigkilled": killed, "survivors": left(), "exit_code": proc.returncode}


# ---------------------------------------------------------------- RabbitMQ (--transport amqp)

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")  # Debian's scripts that run as the calling user (no su)


class RabbitNode:
    """A private RabbitMQ node (the same recipe as tests/servers.py RabbitServer): own node name, free loopback AMQP
    and distribution ports, own data/log dir under the run directory, no plugins; stopped by its process group."""

    def __init__(self, base: Path) -> None:
        self.port, self.dist_port = free_port(), free_port()
        self.dir = base
        self.dir.mkdir()
        self.node = f"celeriac-bench-{os.getpid()}-{self.port}@localhost"
        (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
                                                "loopback_users.guest = true\n")
        (self.dir / "enabled_plugins").write_text("[].\n")
        self.env = dict(os.environ, RABBITMQ_NODENAME=self.node, RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
                        RABBITMQ_NODE_PORT=str(self.port), RABBITMQ_DIST_PORT=str(self.dist_port),
                        RABBITMQ_MNESIA_BASE=str(self.dir / "mnesia"), RABBITMQ_LOG_BASE=str(self.dir / "log"),
                        RABBITMQ_CONFIG_FILE=str(self.dir / "rabbitmq"),
                        RABBITMQ_ENABLED_PLUGINS_FILE=str(self.dir / "enabled_plugins"),
                        RABBITMQ_PID_FILE=str(self.dir / "pid"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.version = "?"

    def url(self, vhost: str) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{vhost}"

    def start(self, timeout: float = 120.0) -> None:
        self.proc = subprocess.Popen([str(RABBIT_BIN / "rabbitmq-server")], env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=open(self.dir / "server.out", "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.ping():
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited (rc={self.proc.returncode}): "
                                   f"{(self.dir / 'server.out').read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        else:
            raise RuntimeError(f"RabbitMQ did not accept AMQP connections within {timeout:.0f} s; "
                               f"see {self.dir / 'server.out'}")
        try:
            self.version = self.ctl("version").strip() or "?"
        except RuntimeError:
            pass

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"AMQP\x00\x00\x09\x01")
                return s.recv(8)[:1] == b"\x01"  # a Connection.Start frame
        except OSError:
            return False

    def ctl(self, *args: str, timeout: float = 120.0) -> str:
        r = subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), "-n", self.node, *args], env=self.env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed (rc={r.returncode}): "
                               f"{(r.stderr or r.stdout).strip()[-1000:]}")
        return r.stdout

    def fresh_vhost(self, vhost: str) -> None:
        """An empty vhost that guest may use (deleted first if a previous run left it)."""
        if vhost in self.ctl("list_vhosts", "--quiet", "--no-table-headers").split():
            self.ctl("delete_vhost", vhost)
        self.ctl("add_vhost", vhost)
        self.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")

    def queues(self, vhost: str) -> dict[str, int]:
        """queue name -> messages (ready + unacked) in `vhost`."""
        out = self.ctl("list_queues", "-p", vhost, "--quiet", "--no-table-headers", "name", "messages")
        found: dict[str, int] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[-1].isdigit():
                found[" ".join(parts[:-1])] = int(parts[-1])
        return found

    def delete_vhost(self, vhost: str) -> None:
        self.ctl("delete_vhost", vhost)

    def stop(self) -> dict[str, Any]:
        """SIGTERM to the node's process group (a clean Erlang shutdown), SIGKILL to the group after 60 s."""
        info: dict[str, Any] = {"sigkill": False}
        if self.proc is None:
            return info
        pgid = self.proc.pid
        if self.proc.poll() is None:
            os.killpg(pgid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(pgid, signal.SIGKILL)
                info["sigkill"] = True
                self.proc.wait(10)
        # children of the node (erl_child_setup, inet_gethost) share its process group; none may be left
        for _ in range(50):
            left = [p for p in all_pids() if alive(p) and _pgid(p) == pgid]
            if not left:
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(pgid, signal.SIGKILL)
                info["sigkill"] = True
            except ProcessLookupError:
                pass
            time.sleep(0.2)
        info["survivors"] = [p for p in all_pids() if alive(p) and _pgid(p) == pgid]
        return info


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


# ---------------------------------------------------------------- setup


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def setup_celery_venv(celery_venv: Path, base_python: Path, logfile: Path) -> None:
    with open(logfile, "ab") as out:
        if not venv_python(celery_venv).exists():
            log(f"# creating {celery_venv} (from {base_python}) ...")
            subprocess.run([str(base_python), "-m", "venv", str(celery_venv)], check=True, stdout=out,
                           stderr=subprocess.STDOUT)
        log(f'# pip install -U "celery[redis]" hiredis  (into {celery_venv}; log {logfile}) ...')
        rc = subprocess.run([str(venv_python(celery_venv)), "-m", "pip", "install", "--disable-pip-version-check",
                             "-U", "celery[redis]", "hiredis"], stdout=out, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        sys.exit(f"pip install into {celery_venv} failed (rc={rc}); see {logfile}:\n"
                 + "\n".join(logfile.read_text(errors="replace").splitlines()[-15:]))


def check_venv(name: str, venv: Path, script: str, modules: str) -> str | None:
    if not venv_python(venv).exists():
        return f"{name}: no venv at {venv}"
    if not (venv / "bin" / script).exists():
        return f"{name}: no `{script}` console script in {venv}/bin"
    r = subprocess.run([str(venv_python(venv)), "-c", f"import {modules}"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"{name}: `import {modules}` fails in {venv}: {r.stderr.strip().splitlines()[-1:]}"
    return None


def git_describe() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "src"],
                               capture_output=True, text=True).stdout.strip()
        return f"git {rev}" + (", src/ has uncommitted changes" if dirty else "") if rev else ""
    except FileNotFoundError:
        return ""


# ---------------------------------------------------------------- one system, one round


def worker_log_problems(path: Path) -> dict[str, Any]:
    """Lines of the worker log that look like trouble (the worker runs with --loglevel=warning)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {"count": 0, "first": []}
    bad = [ln for ln in lines if any(w in ln for w in ("ERROR", "CRITICAL", "Traceback", "WARNING", "Error"))
           and "warm shutdown" not in ln.lower()]  # celeriac's own notice that it got the driver's SIGTERM
    return {"count": len(bad), "first": bad[:5]}


def run_system(name: str, venv: Path, port: int, url: str, n: int, lat: int, concurrency: int, rundir: Path,
               rnd: int, rabbit: RabbitNode | None = None) -> dict[str, Any]:
    sysdir = rundir / f"r{rnd}-{name.lower()}"
    sysdir.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CELERIAC_", "CELERY_", "PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV"))}
    vhost = None
    if rabbit is None:
        (sysdir / "benchtasks.py").write_text(TASKS[name])
        env.update(BENCH_REDIS_URL=url, PYTHONPATH=str(sysdir), VIRTUAL_ENV=str(venv),
                   PATH=f"{venv}/bin:{os.environ.get('PATH', '')}")
    else:
        # a fresh, empty vhost for this system run: no queue, exchange or message of the other system is visible
        vhost = f"bench-r{rnd}-{name.lower()}"
        rabbit.fresh_vhost(vhost)
        (sysdir / "benchtasks.py").write_text(TASKS_AMQP[name])
        env.update(BENCH_BROKER_URL=rabbit.url(vhost), BENCH_BACKEND_URL=url, PYTHONPATH=str(sysdir),
                   VIRTUAL_ENV=str(venv), PATH=f"{venv}/bin:{os.environ.get('PATH', '')}")
    bindir = venv / "bin"
    if name == "celeriac":
        worker_cmd = [str(bindir / "celeriac"), "-A", "benchtasks", "worker", "-c", str(concurrency),
                      "--loglevel=warning"]
    else:
        worker_cmd = [str(bindir / "celery"), "-A", "benchtasks", "worker", "-c", str(concurrency),
                      *CELERY_WORKER_FLAGS]

    redis_cmd(port, "FLUSHALL")
    assert redis_cmd(port, "DBSIZE") == 0
    out_json = sysdir / "client.json"
    clog = open(sysdir / "client.log", "wb")
    wlog = open(sysdir / "worker.log", "wb")
    res: dict[str, Any] = {"load_start": loadavg(),
                              "worker_cmd": " ".join([Path(worker_cmd[0]).name, *worker_cmd[1:]])}
    if rabbit is not None:
        res["broker_url"] = rabbit.url(vhost or "")
    client = subprocess.Popen([str(venv_python(venv)), str(CLIENT), "--n", str(n), "--lat", str(lat),
                               "--out", str(out_json)], cwd=sysdir, env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=clog)
    worker = None
    try:
        line = readline_until(client.stdout, time.time() + 900)
        if line != "ENQUEUED":
            raise RuntimeError(f"client failed during enqueue (got {line!r}); see {clog.name}")
        res["redis_keys_after_enqueue"] = redis_cmd(port, "DBSIZE")
        if rabbit is not None and vhost is not None:
            res["queues_after_enqueue"] = rabbit.queues(vhost)
            res["queue_msgs_after_enqueue"] = sum(res["queues_after_enqueue"].values())
        t0 = time.time()
        worker = subprocess.Popen(worker_cmd, cwd=sysdir, env=env, stdin=subprocess.DEVNULL, stdout=wlog,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        assert client.stdin is not None
        client.stdin.write(f"{t0!r}\n".encode())
        client.stdin.flush()
        deadline = time.time() + 900
        line = None
        while time.time() < deadline:
            line = readline_until(client.stdout, min(deadline, time.time() + 2))
            if line is not None or client.poll() is not None:
                break
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited early (rc={worker.returncode}); see {wlog.name}")
        if line != "DONE":
            raise RuntimeError(f"client failed after enqueue (got {line!r}); see {clog.name}")
        res.update(json.loads(out_json.read_text()))
        time.sleep(0.5)  # an idle moment before sampling memory
        pids = tree(worker.pid)
        res["rss_mb"], res["pss_mb"] = memory_mb(pids)
        res["worker_procs"] = len(pids)
        res["redis_used_mb"] = int(redis_info(port, "memory").get("used_memory", "0")) / 2**20
    except Exception as e:  # noqa: BLE001
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        if worker is not None:
            res["stop"] = stop_worker(worker)
        if client.poll() is None:
            client.kill()
        client.wait()
        clog.close()
        wlog.close()
        if rabbit is not None and vhost is not None:
            try:  # what the system left in its vhost (after its worker stopped), then drop the whole vhost
                res["queues_at_end"] = rabbit.queues(vhost)
                rabbit.delete_vhost(vhost)
            except Exception as e:  # noqa: BLE001
                res.setdefault("error", f"cleaning up vhost {vhost}: {type(e).__name__}: {e}")
    res["worker_log_problems"] = worker_log_problems(sysdir / "worker.log")
    res["load_end"] = loadavg()
    return res


# ---------------------------------------------------------------- report


def fmt(x: object, nd: int = 0) -> str:
    if x is None:
        return "–"
    return f"{float(x):,.{nd}f}"  # type: ignore[arg-type]


COLS = [("enqueue/s", "enqueue_per_s", 0), ("tasks/s", "tasks_per_s", 0), ("p50 ms", "p50_ms", 2),
        ("p99 ms", "p99_ms", 2), ("RSS MB", "rss_mb", 0), ("PSS MB", "pss_mb", 0)]
RATIO_CAPTION = ("ratio row = celeriac ÷ Celery in every column: above 1 is better for celeriac in enqueue/s and "
                 "tasks/s, below 1 is better for celeriac in p50, p99, RSS and PSS (lower latency and memory).")


def ratio(a: object, b: object) -> str:
    if a is None or b is None or not float(b):  # type: ignore[arg-type]
        return "–"
    return f"{float(a) / float(b):.2f}"  # type: ignore[arg-type]


def main_table(rows: dict[str, dict[str, Any]], order: list[str], transport: str = "redis") -> list[str]:
    # --transport amqp names the broker in the header, in every system cell and in the ratio row; the Redis
    # mode's table is left exactly as it always was (its title says Redis).
    head, tag = ("system (broker: RabbitMQ)", " (RabbitMQ)") if transport == "amqp" else ("system", "")
    lines = [f"| {head} | " + " | ".join(c[0] for c in COLS) + " |", "| --- |" + " ---: |" * len(COLS)]
    for name in order:
        r = rows[name]
        if "error" in r:
            lines.append(f"| {name}{tag} | error: {r['error']} |" + " |" * (len(COLS) - 1))
            continue
        lines.append(f"| {name}{tag} | " + " | ".join(fmt(r.get(k), nd) for _, k, nd in COLS) + " |")
    a, b = rows.get("celeriac", {}), rows.get("Celery", {})
    if "error" not in a and "error" not in b:
        cells = " | ".join(ratio(a.get(k), b.get(k)) for _, k, _ in COLS)
        lines.append(f"| **ratio celeriac/Celery{', RabbitMQ broker' if transport == 'amqp' else ''}** | {cells} |")
    return lines


def queues_cell(queues: dict[str, int] | None) -> str:
    if not queues:
        return "–" if queues is None else "none"
    delay = [q for q in queues if q.startswith("celeriac.delay.")]
    shown = [f"{q}: {m}" for q, m in sorted(queues.items()) if q not in delay]
    if delay:
        shown.append(f"{len(delay)} × celeriac.delay.*: {sum(queues[q] for q in delay)}")
    return "<br>".join(shown)


def detail_table_amqp(rows: dict[str, dict[str, Any]], order: list[str]) -> list[str]:
    lines = ["| system (broker: RabbitMQ) | worker start → 1st result s | steady tasks/s (after 1st result) | "
             "mean ms | max ms | worker procs | wrong values | msgs in RabbitMQ after enqueue | "
             "Redis keys after enqueue | Redis used MB at end | RabbitMQ queues after worker stop (queue: msgs) | "
             "stop s (SIGTERM) | SIGKILLed / survivors | worker log warnings+errors | loadavg-1m start→end |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: | --- |"]
    for name in order:
        r = rows[name]
        stop = r.get("stop") or {}
        wrong = None if "error" in r else int(r.get("wrong_results", 0)) + int(r.get("wrong_roundtrips", 0))
        lines.append(
            f"| {name} | {fmt(r.get('first_result_s'), 2)} | {fmt(r.get('steady_tasks_per_s'))} | "
            f"{fmt(r.get('mean_ms'), 2)} | {fmt(r.get('max_ms'), 1)} | {r.get('worker_procs', '–')} | "
            f"{'–' if wrong is None else wrong} | {fmt(r.get('queue_msgs_after_enqueue'))} | "
            f"{fmt(r.get('redis_keys_after_enqueue'))} | {fmt(r.get('redis_used_mb'), 1)} | "
            f"{queues_cell(r.get('queues_at_end'))} | {fmt(stop.get('stop_s'), 2)} | "
            f"{len(stop.get('sigkilled', []))} / {len(stop.get('survivors', []))} | "
            f"{(r.get('worker_log_problems') or {}).get('count', '–')} | "
            f"{r.get('load_start')}→{r.get('load_end')} |")
    return lines


def detail_table(rows: dict[str, dict[str, Any]], order: list[str]) -> list[str]:
    lines = ["| system | worker start → 1st result s | steady tasks/s (after 1st result) | mean ms | max ms | "
             "worker procs | wrong values | Redis keys after enqueue | Redis used MB at end | stop s (SIGTERM) | "
             "SIGKILLed / survivors | loadavg-1m start→end |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for name in order:
        r = rows[name]
        stop = r.get("stop") or {}
        wrong = None if "error" in r else int(r.get("wrong_results", 0)) + int(r.get("wrong_roundtrips", 0))
        lines.append(
            f"| {name} | {fmt(r.get('first_result_s'), 2)} | {fmt(r.get('steady_tasks_per_s'))} | "
            f"{fmt(r.get('mean_ms'), 2)} | {fmt(r.get('max_ms'), 1)} | {r.get('worker_procs', '–')} | "
            f"{'–' if wrong is None else wrong} | {fmt(r.get('redis_keys_after_enqueue'))} | "
            f"{fmt(r.get('redis_used_mb'), 1)} | {fmt(stop.get('stop_s'), 2)} | "
            f"{len(stop.get('sigkilled', []))} / {len(stop.get('survivors', []))} | "
            f"{r.get('load_start')}→{r.get('load_end')} |")
    return lines


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def report(args: argparse.Namespace, port: int, rounds: list[tuple[list[str], dict[str, dict[str, Any]]]],
           versions: dict[str, dict[str, str]], started: datetime.datetime,
           rabbit: dict[str, Any] | None = None) -> str:
    if rabbit is not None:
        return report_amqp(args, port, rounds, versions, started, rabbit)
    rver = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    rver = rver.split(" sha=")[0]
    cpu = ""
    try:
        cpu = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")][0]
    except (OSError, IndexError):
        pass

    def vers(name: str) -> str:
        v = versions.get(name, {})
        if name == "celeriac":
            head = f"celeriac {v.get('celeriac', '?')}" + (f" ({git_describe()})" if git_describe() else "")
        else:
            head = f"Celery {v.get('celery', '?')} (kombu {v.get('kombu', '?')})"
        return f"{head}, redis-py {v.get('redis', '?')}, hiredis {v.get('hiredis', '?')}, Python {v.get('python', '?')}"

    md = [f"# celeriac vs Celery on one local Redis — {started:%Y-%m-%d %H:%M}", "",
          f"Machine: `nproc` = {os.cpu_count()} ({cpu}); Linux {platform.release()}; {rver}. One fresh redis-server on "
          f"127.0.0.1:{port} (`--save '' --appendonly no`); broker and result backend of both systems are "
          f"`redis://127.0.0.1:{port}/0`; FLUSHALL before each system. Client, worker and Redis share the cores.", "",
          f"Versions: {vers('celeriac')}; {vers('Celery')}.", "",
          workload_text(args, ""), ""]
    for i, (order, rows) in enumerate(rounds, 1):
        md += [f"## Round {i} (run order: {', '.join(order)})", "",
               f"Throughput, latency and worker memory; {RATIO_CAPTION}", ""]
        md += main_table(rows, list(SYSTEMS)) + [""] + detail_table(rows, list(SYSTEMS)) + [""]
    if len(rounds) > 1:
        avg: dict[str, dict[str, Any]] = {}
        for name in SYSTEMS:
            ok = [rows[name] for _, rows in rounds if "error" not in rows[name]]
            if not ok:
                avg[name] = {"error": "failed in every round"}
                continue
            avg[name] = {k: mean([float(r[k]) for r in ok if r.get(k) is not None]) for _, k, _ in COLS}
        md += [f"## Mean of the {len(rounds)} rounds", "", f"Arithmetic mean per column; {RATIO_CAPTION}", ""]
        md += main_table(avg, list(SYSTEMS)) + [""]
    md += ["## Configuration (defaults changed, and why)", ""]
    md += [f"- **{name}**: {CONFIG[name]}" for name in SYSTEMS]
    md += ["- **both**: same task body (`return x + y`), same client code and sweep, same Redis and URL, 2 pool "
           "processes each, hiredis installed in both venvs, same Python build. The environment is passed through "
           "unchanged (minus any CELERIAC_*/CELERY_* variables).", ""]
    errs = [(i, s, r) for i, (_, rows) in enumerate(rounds, 1) for s, r in rows.items()
            if "error" in r or (r.get("stop") or {}).get("survivors") or int(r.get("wrong_results", 0) or 0)
            or int(r.get("wrong_roundtrips", 0) or 0)]
    if errs:
        md += ["## Problems", ""]
        for i, s, r in errs:
            stop = r.get("stop") or {}
            md.append(f"- round {i} {s}: error={r.get('error')}, wrong values={r.get('wrong_results')}/"
                      f"{r.get('wrong_roundtrips')}, survivors={stop.get('survivors')}")
        md.append("")
    return "\n".join(md)


def rabbit_log_summary(logdir: Path) -> dict[str, dict[str, int]]:
    """Per vhost, from the node's log: AMQP connections opened, closed with a proper connection.close, closed by the
    client dropping the TCP connection; and [error] lines (under the key '(node)')."""
    out: dict[str, dict[str, int]] = {}
    pending: dict[str, str] = {}  # Erlang pid of a 'closing AMQP connection' line -> its vhost
    errors = 0
    for f in sorted(logdir.glob("*.log")):
        for line in f.read_text(errors="replace").splitlines():
            if "[error]" in line:
                errors += 1
            parts = line.split()
            pid = parts[3] if len(parts) > 3 else ""
            if "authenticated and granted access to vhost '" in line:
                vhost = line.rsplit("vhost '", 1)[1].rstrip("'")
                out.setdefault(vhost, {"opened": 0, "closed": 0, "dropped": 0})["opened"] += 1
            elif "closing AMQP connection" in line and "vhost: '" in line:
                vhost = line.split("vhost: '", 1)[1].split("'", 1)[0]
                d = out.setdefault(vhost, {"opened": 0, "closed": 0, "dropped": 0})
                if line.rstrip().endswith(":"):  # the reason follows on the next line(s)
                    pending[pid] = vhost
                else:
                    d["closed"] += 1
            elif pid in pending:
                vhost = pending.pop(pid)
                d = out[vhost]
                d["dropped" if "unexpectedly closed TCP connection" in line else "closed"] += 1
    out["(node)"] = {"errors": errors}
    return out


def report_amqp(args: argparse.Namespace, port: int, rounds: list[tuple[list[str], dict[str, dict[str, Any]]]],
                versions: dict[str, dict[str, str]], started: datetime.datetime, rabbit: dict[str, Any]) -> str:
    rver = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    rver = rver.split(" sha=")[0]
    cpu = ""
    try:
        cpu = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")][0]
    except (OSError, IndexError):
        pass
    try:
        otp = Path("/usr/lib/erlang/releases").iterdir().__next__().name
    except (OSError, StopIteration):
        otp = "?"

    def vers(name: str) -> str:
        v = versions.get(name, {})
        if name == "celeriac":
            head = f"celeriac {v.get('celeriac', '?')}" + (f" ({git_describe()})" if git_describe() else "")
            return f"{head}, pika {v.get('pika', '?')}, redis-py {v.get('redis', '?')}, hiredis " \
                   f"{v.get('hiredis', '?')}, Python {v.get('python', '?')}"
        head = f"Celery {v.get('celery', '?')} (kombu {v.get('kombu', '?')}, py-amqp {v.get('amqp', '?')})"
        return f"{head}, redis-py {v.get('redis', '?')}, hiredis {v.get('hiredis', '?')}, Python {v.get('python', '?')}"

    stop = rabbit.get("stop") or {}
    md = [f"# celeriac vs Celery with a RabbitMQ broker (results in Redis) — {started:%Y-%m-%d %H:%M}", "",
          f"Transport: **amqp** (`--transport amqp`). Machine: `nproc` = {os.cpu_count()} ({cpu}); Linux "
          f"{platform.release()}; RabbitMQ {rabbit.get('version', '?')} (Erlang/OTP {otp}); {rver}.", "",
          f"Broker: ONE private RabbitMQ node `{rabbit.get('node')}` on 127.0.0.1:{rabbit.get('port')} (own data "
          f"directory, no plugins, default settings otherwise); each system run gets a fresh vhost "
          f"(`rabbitmqctl add_vhost` + `set_permissions guest '.*' '.*' '.*'`, `delete_vhost` after the run), so its "
          f"broker URL is `amqp://guest:guest@127.0.0.1:{rabbit.get('port')}/bench-r<round>-<system>`. Result backend "
          f"of both systems: one fresh redis-server, `redis://127.0.0.1:{port}/0` (`--save '' --appendonly no`), "
          f"FLUSHALL before each system — the same result store for both, so the difference is the broker. Client, "
          f"worker, RabbitMQ and Redis share the cores. The node was stopped by SIGTERM to its process group "
          f"{'(needed SIGKILL)' if stop.get('sigkill') else '(no SIGKILL needed)'}.", "",
          f"Versions: {vers('celeriac')}; {vers('Celery')}.", "",
          workload_text(args, " on Redis"), ""]
    for i, (order, rows) in enumerate(rounds, 1):
        md += [f"## Round {i}, RabbitMQ broker (run order: {', '.join(order)})", "",
               f"Throughput, latency and worker memory; {RATIO_CAPTION}", ""]
        md += main_table(rows, list(SYSTEMS), "amqp") + [""] + detail_table_amqp(rows, list(SYSTEMS)) + [""]
    if len(rounds) > 1:
        avg: dict[str, dict[str, Any]] = {}
        for name in SYSTEMS:
            ok = [rows[name] for _, rows in rounds if "error" not in rows[name]]
            if not ok:
                avg[name] = {"error": "failed in every round"}
                continue
            avg[name] = {k: mean([float(r[k]) for r in ok if r.get(k) is not None]) for _, k, _ in COLS}
        md += [f"## Mean of the {len(rounds)} rounds, RabbitMQ broker", "",
               f"Arithmetic mean per column; {RATIO_CAPTION}", ""]
        md += main_table(avg, list(SYSTEMS), "amqp") + [""]
    md += ["## Configuration (defaults changed, and why)", ""]
    md += [f"- **{name}**: {CONFIG_AMQP[name]}" for name in SYSTEMS]
    md += ["- **both**: same task body (`return x + y`), same client code and sweep, same RabbitMQ node (a fresh "
           "vhost per run) and the same Redis result store, 2 pool processes each, same Python build. The environment "
           "is passed through unchanged (minus any CELERIAC_*/CELERY_* variables).", ""]
    try:
        rlog = rabbit_log_summary(Path(rabbit["dir"]) / "log")
    except (KeyError, OSError):
        rlog = {}
    if rlog:
        md += ["## RabbitMQ node log per run", "",
               "AMQP connections per system run (client + worker processes), from the node's log: opened, closed "
               "with an AMQP `connection.close`, and dropped (the process exited or closed its socket without it; "
               "RabbitMQ logs \"client unexpectedly closed TCP connection\").", "",
               "| vhost | connections opened | closed cleanly | dropped without close |",
               "| --- | ---: | ---: | ---: |"]
        md += [f"| {v} | {d['opened']} | {d['closed']} | {d['dropped']} |" for v, d in sorted(rlog.items())
               if v != "(node)"]
        md += ["", f"`[error]` lines in the node's log: {rlog['(node)']['errors']}.", ""]
    logs = [(i, s, r["worker_log_problems"]) for i, (_, rows) in enumerate(rounds, 1) for s, r in rows.items()
            if (r.get("worker_log_problems") or {}).get("count")]
    if logs:
        md += ["## Worker log warnings and errors (first lines)", ""]
        for i, s, w in logs:
            md.append(f"- round {i} {s}: {w['count']} line(s)")
            md += [f"  - `{ln.strip()[:300]}`" for ln in w["first"]]
        md.append("")
    errs = [(i, s, r) for i, (_, rows) in enumerate(rounds, 1) for s, r in rows.items()
            if "error" in r or (r.get("stop") or {}).get("survivors") or int(r.get("wrong_results", 0) or 0)
            or int(r.get("wrong_roundtrips", 0) or 0)]
    if errs or stop.get("survivors"):
        md += ["## Problems", ""]
        for i, s, r in errs:
            st = r.get("stop") or {}
            md.append(f"- round {i} {s}: error={r.get('error')}, wrong values={r.get('wrong_results')}/"
                      f"{r.get('wrong_roundtrips')}, survivors={st.get('survivors')}")
        if stop.get("survivors"):
            md.append(f"- RabbitMQ node processes left after SIGKILL: {stop['survivors']}")
        md.append("")
    return "\n".join(md)


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000, help="tasks in the enqueue and throughput phases")
    ap.add_argument("--lat", type=int, default=500, help="timed sequential round trips")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=2, help="worker pool size for both systems")
    ap.add_argument("--out", default=None, help="report file (default /tmp/celeriac-vs-celery[-amqp]-<time>.md)")
    ap.add_argument("--skip-setup", action="store_true", help="reuse benchmarks/.venv-celery as it is (no pip)")
    ap.add_argument("--celeriac-venv", type=Path, default=ROOT / ".venv")
    ap.add_argument("--celery-venv", type=Path, default=HERE / ".venv-celery")
    ap.add_argument("--transport", choices=("redis", "amqp"), default="redis",
                    help="redis: one Redis as broker and result store (default); amqp: a private RabbitMQ node as "
                         "broker, one Redis as result store")
    args = ap.parse_args()
    amqp = args.transport == "amqp"

    started = datetime.datetime.now()
    stamp = started.strftime("%Y%m%d-%H%M%S")
    kind = "celeriac-vs-celery-amqp" if amqp else "celeriac-vs-celery"
    out = Path(args.out or f"/tmp/{kind}-{stamp}.md")
    rundir = Path(tempfile.mkdtemp(prefix=f"{kind}-{stamp}-"))
    log(f"# run directory (logs, raw JSON, benchtasks.py per system): {rundir}")

    if not args.skip_setup:
        base = venv_python(args.celeriac_venv)
        setup_celery_venv(args.celery_venv, base if base.exists() else Path(sys.executable),
                          rundir / "install-celery.log")
    problems = [p for p in (check_venv("celeriac", args.celeriac_venv, "celeriac",
                                       "celeriac, redis, hiredis" + (", pika" if amqp else "")),
                            check_venv("Celery", args.celery_venv, "celery",
                                       "celery, redis, hiredis" + (", amqp" if amqp else "")))
                if p]
    if problems:
        sys.exit("cannot run:\n  " + "\n  ".join(problems)
                 + f"\n(celeriac: `pip install -e .[{'redis,amqp' if amqp else 'redis'}]` in the project venv; Celery: "
                   "run without --skip-setup)")
    if not shutil.which("redis-server"):
        sys.exit("redis-server not found on PATH")
    if amqp and not (RABBIT_BIN / "rabbitmq-server").exists():
        sys.exit(f"{RABBIT_BIN / 'rabbitmq-server'} not found (Debian package rabbitmq-server)")

    # the SIGTERM/SIGHUP of this driver must still run the cleanup below
    def _bail(signum: int, _frame: object) -> None:
        raise SystemExit(f"stopped by {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, _bail)
    signal.signal(signal.SIGHUP, _bail)

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    redis_dir = rundir / "redis"
    redis_dir.mkdir()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(redis_dir), "--logfile", str(redis_dir / "redis.log"),
                              "--daemonize", "no"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    rounds: list[tuple[list[str], dict[str, dict[str, Any]]]] = []
    versions: dict[str, dict[str, str]] = {}
    rabbit: RabbitNode | None = None
    rabbit_info: dict[str, Any] | None = None
    try:
        for _ in range(100):
            try:
                if redis_cmd(port, "PING", timeout=1) == "PONG":
                    break
            except OSError:
                pass
            if redis.poll() is not None:
                sys.exit(f"redis-server exited (rc={redis.returncode}); see {redis_dir / 'redis.log'}")
            time.sleep(0.1)
        else:
            sys.exit("redis-server did not answer PING within 10 s")
        log(f"# redis-server pid {redis.pid} on 127.0.0.1:{port}; N={args.n} LAT={args.lat} rounds={args.rounds}")
        if amqp:
            rabbit = RabbitNode(rundir / "rabbitmq")
            log(f"# starting RabbitMQ node {rabbit.node} on 127.0.0.1:{rabbit.port} (dir {rabbit.dir}) ...")
            t = time.time()
            rabbit.start()
            assert rabbit.proc is not None
            log(f"# RabbitMQ {rabbit.version} up after {time.time() - t:.1f} s (pid/pgid {rabbit.proc.pid})")
        venvs = {"celeriac": args.celeriac_venv, "Celery": args.celery_venv}
        for rnd in range(1, args.rounds + 1):
            order = list(SYSTEMS) if rnd % 2 else list(reversed(SYSTEMS))
            log(f"# round {rnd}: {', '.join(order)}")
            rows: dict[str, dict[str, Any]] = {}
            for name in order:
                t = time.time()
                r = run_system(name, venvs[name], port, url, args.n, args.lat, args.concurrency, rundir, rnd,
                               rabbit)
                rows[name] = r
                if isinstance(r.get("versions"), dict):
                    versions[name] = r["versions"]
                stop = r.get("stop") or {}
                status = r.get("error") or (
                    f"enqueue {r['enqueue_per_s']:,.0f}/s  tasks {r['tasks_per_s']:,.0f}/s  p50 {r['p50_ms']:.2f} ms  "
                    f"p99 {r['p99_ms']:.2f} ms  RSS {r['rss_mb']:.0f} MB  PSS {r['pss_mb']:.0f} MB")
                log(f"  {name:8s} {status}  (stop {fmt(stop.get('stop_s'), 2)} s, "
                    f"SIGKILLed {len(stop.get('sigkilled', []))}, survivors {stop.get('survivors')}; "
                    f"{time.time() - t:.0f} s)")
            rounds.append((order, rows))
            (rundir / "raw.json").write_text(json.dumps({"rounds": [{"order": o, "rows": r} for o, r in rounds]},
                                                        indent=1, default=str))
    finally:
        if rabbit is not None:
            rabbit_info = {"node": rabbit.node, "port": rabbit.port, "version": rabbit.version, "dir": str(rabbit.dir)}
            log(f"# stopping RabbitMQ node {rabbit.node} ...")
            rabbit_info["stop"] = rabbit.stop()
        if redis.poll() is None:
            redis.terminate()
            try:
                redis.wait(10)
            except subprocess.TimeoutExpired:
                redis.kill()
                redis.wait()
    text = report(args, port, rounds, versions, started, rabbit_info)
    out.write_text(text + "\n")
    print()
    print(text)
    log(f"\nwritten: {out}   (logs: {rundir})")
    bad = any("error" in r or (r.get("stop") or {}).get("survivors") for _, rows in rounds for r in rows.values())
    bad = bad or bool(rabbit_info and (rabbit_info.get("stop") or {}).get("survivors"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
