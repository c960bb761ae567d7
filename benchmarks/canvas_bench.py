"""Canvas benchmark: publishing a big group, and a chord run by a real worker, on SQLite, Redis and RabbitMQ.

    .venv/bin/python benchmarks/canvas_bench.py [--brokers sqlite,redis,amqp] [--n 10000] [--chord-n 5000]
                                                [--rounds 3] [--concurrency 2] [--json FILE]

Per broker (each in a fresh child process of this script, in its own temp dir):

(a) publish, no worker running: `group(add.s(i, i) for i in range(N)).apply_async()` against N one-by-one
    `add.delay(i, i)` calls (the two alternate, --rounds times; the table shows the median). Wall time of the whole
    statement (building the signatures included), signatures/s, how many times `app.broker.publish` was called and
    with how many messages in all (its bound method is wrapped), the time spent inside it, and the broker round
    trips as seen by the transport itself:
      SQLite    committed write transactions (COMMIT statements, from sqlite3's trace callback on the connection),
      Redis     requests the client sent (redis-py's send_packed_command: one per command or pipeline; the
                commands the server executed, those inside the Lua scripts included, are listed too, from
                INFO commandstats before/after),
      RabbitMQ  times the client blocked for a broker reply (pika BlockingChannel._flush_output with a waiter:
                publisher confirms, tx.commit, declares).
    After each phase the queue must hold exactly N messages (checked with queue_sizes, then purged).
(b) a chord of CHORD_N `add.s(i, i)` header tasks with a `tsum.s()` body, run by a real worker
    (`celeriac -A canvastasks worker -c 2 --loglevel=warning`, started before and warmed up with one round trip):
    time from the `apply_async` call until the body's result is read (`.get()`), header tasks/s, and the value
    checked (sum of 2i).

Servers: SQLite is a file in the run dir (broker and result backend). Redis: one private redis-server on a free
127.0.0.1 port (`--save '' --appendonly no`), broker and backend `redis://127.0.0.1:PORT/0`, FLUSHALL before each
broker. RabbitMQ: one private node on free loopback ports (compare_celery.py's RabbitNode), a fresh vhost, results in
that same private Redis. Only the processes this script started are stopped, by PID / process group. The system
servers on 6379/5672 are never touched. The task module reads its URLs from BENCH_BROKER / BENCH_BACKEND, as in
bench.py; CELERIAC_* variables are removed from the environment of the child and the worker.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import compare_celery as cc  # noqa: E402  (stdlib only: free_port, redis_cmd, RabbitNode, stop_worker, ...)

TASKS = textwrap.dedent("""\
    import os
    from celeriac import Celeriac

    app = Celeriac("canvasbench", broker=os.environ["BENCH_BROKER"], backend=os.environ["BENCH_BACKEND"])


    @app.task
    def add(x, y):
        return x + y


    @app.task
    def tsum(values):
        return sum(values)
    """)

LABEL = {"sqlite": "SQLite (file)", "redis": "Redis", "amqp": "RabbitMQ", "postgres": "PostgreSQL"}
TRIPS = {"sqlite": "write transactions (COMMIT)", "redis": "requests sent (command or pipeline)",
         "amqp": "waits for a broker reply", "postgres": "statements sent"}


# ---------------------------------------------------------------- child: one broker, in its own process


class Counters:
    """publish() calls/messages/time (wrapping app.broker.publish) and the transport's own round trips."""

    def __init__(self, app: Any, kind: str, redis_port: int | None) -> None:
        self.kind, self.redis_port = kind, redis_port
        self.calls = self.messages = 0
        self.publish_s = 0.0
        self.trips = 0  # sqlite COMMITs / redis requests sent / amqp waits for a reply, all client side
        broker = app.broker
        inner = broker.publish

        def publish(messages: Any) -> None:
            self.calls += 1
            self.messages += len(messages)
            t = time.perf_counter()
            try:
                inner(messages)
            finally:
                self.publish_s += time.perf_counter() - t

        broker.publish = publish
        if kind == "sqlite":
            # Outermost write transactions, counted at the database's own transaction(): sqlite3's
            # trace callback would see every COMMIT too, but it expands every statement with its
            # bound values first (10,000 blobs of a group as hex text), which halved the group's rate.
            db = broker.db
            begin = db.transaction

            @contextlib.contextmanager
            def counted_transaction() -> Iterator[None]:
                outermost = not db._depth.get(db._key())
                with begin():
                    yield
                if outermost:
                    self.trips += 1

            db.transaction = counted_transaction
        elif kind == "postgres":
            import psycopg
            execute = psycopg.Connection.execute

            def counted_execute(conn: Any, *a: Any, **kw: Any) -> Any:
                self.trips += 1
                return execute(conn, *a, **kw)

            psycopg.Connection.execute = counted_execute  # type: ignore[method-assign]
        elif kind == "amqp":
            from pika.adapters.blocking_connection import BlockingChannel
            flush = BlockingChannel._flush_output

            def counted(channel: Any, *waiters: Any) -> Any:
                if waiters:  # no waiter = only write out what is buffered (a publish inside a transaction)
                    self.trips += 1
                return flush(channel, *waiters)

            BlockingChannel._flush_output = counted  # type: ignore[method-assign]
        elif kind == "redis":
            from redis.connection import AbstractConnection
            send: Any = AbstractConnection.send_packed_command

            def sent(conn: Any, command: Any, *a: Any, **kw: Any) -> Any:
                self.trips += 1  # one request written (a command, or a whole pipeline), then its reply read
                return send(conn, command, *a, **kw)

            AbstractConnection.send_packed_command = sent  # type: ignore[method-assign,assignment]

    def _redis_stats(self) -> dict[str, int]:
        assert self.redis_port is not None
        out = {}
        for key, value in cc.redis_info(self.redis_port, "commandstats").items():
            calls = dict(kv.split("=", 1) for kv in value.split(","))["calls"]
            out[key.removeprefix("cmdstat_")] = int(calls)
        return out

    def snapshot(self) -> dict[str, Any]:
        snap: dict[str, Any] = {"calls": self.calls, "messages": self.messages, "publish_s": self.publish_s,
                                "trips": self.trips}
        if self.redis_port is not None:
            snap["redis"] = self._redis_stats()
        return snap

    def delta(self, before: dict[str, Any]) -> dict[str, Any]:
        after = self.snapshot()
        out = {k: after[k] - before[k] for k in ("calls", "messages", "publish_s", "trips")}
        if self.redis_port is not None:
            cmds = {k: after["redis"].get(k, 0) - before["redis"].get(k, 0) for k in after["redis"]}
            cmds = {k: v for k, v in cmds.items() if v and k != "info"}  # our own INFO calls are not the client's
            out["redis_commands"] = cmds
            out["redis_total"] = sum(cmds.values())
        return out


def child(args: argparse.Namespace) -> None:
    kind = args.child
    workdir = Path(args.workdir)
    (workdir / "canvastasks.py").write_text(TASKS)
    os.chdir(workdir)
    sys.path.insert(0, str(workdir))
    import canvastasks  # type: ignore[import-not-found]  # written just above
    from celeriac import chord, group

    app, add, tsum = canvastasks.app, canvastasks.add, canvastasks.tsum
    port = int(os.environ["BENCH_REDIS_PORT"]) if os.environ.get("BENCH_REDIS_PORT") else None
    queue = app.conf.task_default_queue
    out: dict[str, Any] = {"broker": kind, "rounds": []}

    app.control.purge([queue])
    add.delay(0, 0)  # warm-up: connections open, queue declared, scripts loaded, ...
    group(add.s(0, 0), add.s(1, 1)).apply_async()  # ... and the batch path (RabbitMQ: its tx channel)
    app.control.purge([queue])
    counters = Counters(app, kind, port)
    n = args.n

    def phase(name: str) -> dict[str, Any]:
        before = counters.snapshot()
        t = time.perf_counter()
        if name == "delay":
            handles = [add.delay(i, i) for i in range(n)]
            count = len(handles)
        else:
            result = group(add.s(i, i) for i in range(n)).apply_async()
            count = len(result.results)
        wall = time.perf_counter() - t
        res = counters.delta(before)
        res.update(wall_s=wall, per_s=n / wall, handles=count)
        res["queued"] = app.control.queue_sizes([queue]).get(queue, {}).get("ready")
        res["purged"] = app.control.purge([queue])
        return res

    for rnd in range(args.rounds):
        order = ("delay", "group") if rnd % 2 == 0 else ("group", "delay")
        out["rounds"].append({name: phase(name) for name in order})
        print(f"  [{kind}] round {rnd + 1}: " + ", ".join(
            f"{k} {v['wall_s']:.3f} s ({v['calls']} publish calls, {v['trips']} trips)"
            for k, v in out["rounds"][-1].items()), file=sys.stderr, flush=True)

    # (b) chord through a real worker
    m = args.chord_n
    celeriac = str(Path(sys.executable).with_name("celeriac"))
    wlog = open(workdir / "worker.log", "wb")
    worker = subprocess.Popen([celeriac, "-A", "canvastasks", "worker", "-c", str(args.concurrency),
                               "--loglevel=warning"], cwd=workdir, env=dict(os.environ, PYTHONPATH=str(workdir)),
                              stdin=subprocess.DEVNULL, stdout=wlog, stderr=subprocess.STDOUT,
                              start_new_session=True)
    ch: dict[str, Any] = {"n": m, "worker_cmd": f"celeriac -A canvastasks worker -c {args.concurrency} "
                                                 "--loglevel=warning"}
    try:
        t = time.perf_counter()
        assert add.delay(1, 1).get(timeout=120) == 2
        ch["worker_ready_s"] = time.perf_counter() - t
        assert tsum.delay([1, 2]).get(timeout=30) == 3
        before = counters.snapshot()
        t0 = time.perf_counter()
        result = chord(add.s(i, i) for i in range(m))(tsum.s())
        t_applied = time.perf_counter()
        ch.update(counters.delta(before))
        value = result.get(timeout=args.timeout)
        t1 = time.perf_counter()
        ch.update(apply_s=t_applied - t0, total_s=t1 - t0, tasks_per_s=m / (t1 - t0), value=value,
                  expected=m * (m - 1), ok=value == m * (m - 1))
        # reference, same worker: the same header as a plain group, until every member's result was read
        t0 = time.perf_counter()
        gres = group(add.s(i, i) for i in range(m)).apply_async()
        t_applied = time.perf_counter()
        values = gres.get(timeout=args.timeout)
        t1 = time.perf_counter()
        ch["group_ref"] = {"apply_s": t_applied - t0, "total_s": t1 - t0, "tasks_per_s": m / (t1 - t0),
                           "ok": values == [2 * i for i in range(m)]}
    except Exception as e:  # noqa: BLE001
        ch["error"] = f"{type(e).__name__}: {e}"
    finally:
        ch["stop"] = cc.stop_worker(worker)
        wlog.close()
    ch["worker_log_problems"] = cc.worker_log_problems(workdir / "worker.log")
    out["chord"] = ch
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))


# ---------------------------------------------------------------- driver


def med(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r[key]) for r in rows)


def span(rows: list[dict[str, Any]], key: str, nd: int) -> str:
    vals = [float(r[key]) for r in rows]
    return f"{min(vals):,.{nd}f}–{max(vals):,.{nd}f}" if len(vals) > 1 else f"{vals[0]:,.{nd}f}"


def same(rows: list[dict[str, Any]], key: str) -> str:
    vals = sorted({r[key] for r in rows})
    return " / ".join(f"{v:,}" for v in vals)


def redis_cmds(rows: list[dict[str, Any]]) -> str:
    seen = sorted({f"{k}×{v:,}" for r in rows for k, v in (r.get("redis_commands") or {}).items()})
    return ", ".join(seen) or "none"


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]], env: dict[str, str]) -> str:
    md = [f"celeriac canvas benchmark, {env['when']}: N = {args.n:,} (group / delay), chord of {args.chord_n:,}, "
          f"{args.rounds} round(s) of (a), worker -c {args.concurrency}", "",
          f"Machine: nproc = {os.cpu_count()}, Linux {platform.release()}, Python {platform.python_version()}; "
          f"{env['versions']}", "",
          f"(a) publishing N signatures with no worker running; median of {args.rounds} round(s) (range in "
          "brackets); calls/messages/trips are per phase and were the same in every round unless a range is shown.",
          "",
          "| broker | how | wall s | signatures/s | `broker.publish` calls | messages | s inside publish | "
          "broker round trips | round trips = | queued after |",
          "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    notes = []
    for kind, res in results.items():
        if "rounds" not in res:
            md.append(f"| {LABEL[kind]} | failed: {res.get('error')} | | | | | | | | |")
            continue
        rows = {name: [r[name] for r in res["rounds"]] for name in ("delay", "group")}
        for name, how in (("delay", f"{args.n:,} × `add.delay(i, i)`"),
                          ("group", f"`group(add.s(i, i) for i in range({args.n}))`<br>`.apply_async()`")):
            rs = rows[name]
            md.append(f"| {LABEL[kind]} | {how} | {med(rs, 'wall_s'):.3f} ({span(rs, 'wall_s', 3)}) "
                      f"| {med(rs, 'per_s'):,.0f} | {same(rs, 'calls')} | {same(rs, 'messages')} "
                      f"| {med(rs, 'publish_s'):.3f} | {same(rs, 'trips')} | {TRIPS[kind]} | {same(rs, 'queued')} |")
        speed = med(rows["delay"], "wall_s") / med(rows["group"], "wall_s")
        md.append(f"| {LABEL[kind]} | **group ÷ delay speed-up** | **{speed:.1f}×** | | | | | | | |")
        if kind in ("redis", "amqp"):
            notes.append(f"- {LABEL[kind]}: commands the Redis server executed per phase (INFO commandstats, "
                         f"those run inside Lua scripts included): delay: {redis_cmds(rows['delay'])}; group: "
                         f"{redis_cmds(rows['group'])}"
                         + (" (Redis is only the result store here)" if kind == "amqp" else ""))
    md += [""] + notes + ["",
                          f"(b) chord of {args.chord_n:,} `add.s(i, i)` header tasks with a `tsum.s()` body, run by "
                          f"a worker started beforehand (`celeriac -A canvastasks worker -c {args.concurrency}`, "
                          "warmed up with one round trip); timed from the chord call until its body's result was "
                          "read. Reference row: then, on the same worker, the same header as a plain group, timed "
                          "until all its results were read with `GroupResult.get()`.", "",
                          "| broker | what | header tasks | apply (publish) s | `broker.publish` calls | apply → body "
                          "result s | header tasks/s | values right | worker stop s | worker log warnings |",
                          "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for kind, res in results.items():
        c = res.get("chord") or {}
        stop = c.get("stop") or {}
        if "total_s" not in c:
            md.append(f"| {LABEL[kind]} | chord | {args.chord_n:,} | failed: {c.get('error') or res.get('error')} "
                      f"| | | | | {cc.fmt(stop.get('stop_s'), 2)} | |")
            continue
        md.append(f"| {LABEL[kind]} | chord | {c['n']:,} | {c['apply_s']:.3f} | {c['calls']} ({c['messages']:,} "
                  f"msgs) | {c['total_s']:.2f} | {c['tasks_per_s']:,.0f} | {'yes' if c['ok'] else 'NO'} "
                  f"({c['value']:,}) | {stop.get('stop_s', 0):.2f} | {c['worker_log_problems']['count']} |")
        g = c.get("group_ref")
        if g:
            md.append(f"| {LABEL[kind]} | reference: plain group, `.get()` of all | {c['n']:,} | {g['apply_s']:.3f} "
                      f"| | {g['total_s']:.2f} | {g['tasks_per_s']:,.0f} | {'yes' if g['ok'] else 'NO'} | | |")
    problems = [f"- {LABEL[k]}: {r.get('error') or r['chord']['error']}" for k, r in results.items()
                if "error" in r or "error" in (r.get("chord") or {})]
    problems += [f"- {LABEL[k]}: {r['chord']['worker_log_problems']}" for k, r in results.items()
                if (r.get("chord") or {}).get("worker_log_problems", {}).get("count")]
    problems += [f"- {LABEL[k]}: worker processes left: {r['chord']['stop']}" for k, r in results.items()
                 if ((r.get("chord") or {}).get("stop") or {}).get("survivors")]
    if problems:
        md += ["", "Problems:", *problems]
    return "\n".join(md)


def src_fingerprint() -> str:
    """A hash of every file under src/ (the working tree as it is, committed or not)."""
    import hashlib
    h = hashlib.sha256()
    for path in sorted((ROOT / "src").rglob("*.py")):
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def versions() -> str:
    py = ROOT / ".venv" / "bin" / "python"
    code = ("import importlib.metadata as m\n"
            "def v(p):\n"
            "    try: return m.version(p)\n"
            "    except Exception: return '-'\n"
            "print(', '.join(f'{p} {v(p)}' for p in ('celeriac', 'redis', 'hiredis', 'pika')))")
    text = subprocess.run([str(py if py.exists() else sys.executable), "-c", code], capture_output=True,
                          text=True).stdout.strip()
    rver = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split(" sha=")[0] \
        if shutil.which("redis-server") else ""
    return f"{text}; {cc.git_describe()}; {rver}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--brokers", default="sqlite,redis,amqp",
                    help="comma-separated: sqlite, redis, amqp, postgres (a private server, fsync on)")
    ap.add_argument("--n", type=int, default=10000, help="signatures in the group / delay() calls in (a)")
    ap.add_argument("--chord-n", type=int, default=5000, help="header tasks of the chord in (b)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (a) per broker (median reported)")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for the chord body's result")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    ap.add_argument("--child", choices=("sqlite", "redis", "amqp", "postgres"), help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return 0

    kinds = [k.strip() for k in args.brokers.split(",") if k.strip()]
    bad = [k for k in kinds if k not in LABEL]
    if bad:
        sys.exit(f"unknown broker(s) {bad}; choose from sqlite, redis, amqp, postgres")
    if any(k in ("redis", "amqp") for k in kinds) and not shutil.which("redis-server"):
        sys.exit("redis-server not found on PATH")
    if "amqp" in kinds and not (cc.RABBIT_BIN / "rabbitmq-server").exists():
        sys.exit(f"{cc.RABBIT_BIN / 'rabbitmq-server'} not found (Debian package rabbitmq-server)")

    def _bail(signum: int, _frame: object) -> None:
        raise SystemExit(f"stopped by {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, _bail)
    signal.signal(signal.SIGHUP, _bail)

    when = datetime.datetime.now()
    src_before = src_fingerprint()
    load_before = cc.loadavg()
    rundir = Path(tempfile.mkdtemp(prefix=f"celeriac-canvas-bench-{when:%Y%m%d-%H%M%S}-"))
    cc.log(f"# run directory: {rundir}")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERIAC_", "BENCH_"))}
    redis: subprocess.Popen[bytes] | None = None
    rabbit: cc.RabbitNode | None = None
    port = 0
    results: dict[str, dict[str, Any]] = {}
    postgres: Any = None
    pg_url = ""
    try:
        if any(k in ("redis", "amqp") for k in kinds):
            port = cc.free_port()
            (rundir / "redis-server").mkdir()
            redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(rundir / "redis-server"), "--logfile",
                                      str(rundir / "redis-server" / "redis.log"), "--daemonize", "no"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
            for _ in range(100):
                try:
                    if cc.redis_cmd(port, "PING", timeout=1) == "PONG":
                        break
                except OSError:
                    pass
                if redis.poll() is not None:
                    sys.exit(f"redis-server exited (rc={redis.returncode})")
                time.sleep(0.1)
            else:
                sys.exit("redis-server did not answer PING within 10 s")
            cc.log(f"# redis-server pid {redis.pid} on 127.0.0.1:{port}")
        if "amqp" in kinds:
            rabbit = cc.RabbitNode(rundir / "rabbitmq")
            t = time.time()
            rabbit.start()
            assert rabbit.proc is not None
            cc.log(f"# RabbitMQ {rabbit.version} node {rabbit.node} on 127.0.0.1:{rabbit.port} up after "
                   f"{time.time() - t:.1f} s (pid/pgid {rabbit.proc.pid})")
            rabbit.fresh_vhost("canvas-bench")
        for kind in kinds:
            workdir = rundir / kind
            workdir.mkdir()
            env = dict(base_env)
            if kind == "sqlite":
                url = f"sqlite:///{workdir / 'canvas.db'}"  # absolute path: sqlite:////tmp/...
                env.update(BENCH_BROKER=url, BENCH_BACKEND=url)
            elif kind == "postgres":
                if postgres is None:
                    sys.path.insert(0, str(Path(__file__).resolve().parent))
                    from pg_private import private_postgres
                    postgres = private_postgres()
                    pg_url = postgres.__enter__()
                env.update(BENCH_BROKER=pg_url, BENCH_BACKEND=pg_url)
            else:
                cc.redis_cmd(port, "FLUSHALL")
                redis_url = f"redis://127.0.0.1:{port}/0"
                broker_url = redis_url if kind == "redis" else rabbit.url("canvas-bench")  # type: ignore[union-attr]
                env.update(BENCH_BROKER=broker_url, BENCH_BACKEND=redis_url, BENCH_REDIS_PORT=str(port))
            cc.log(f"# {LABEL[kind]}: broker {env['BENCH_BROKER']}, backend {env['BENCH_BACKEND']}")
            out = workdir / "result.json"
            t = time.time()
            rc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", kind, "--workdir",
                                 str(workdir), "--out", str(out), "--n", str(args.n), "--chord-n", str(args.chord_n),
                                 "--rounds", str(args.rounds), "--concurrency", str(args.concurrency),
                                 "--timeout", str(args.timeout)], env=env, stdin=subprocess.DEVNULL).returncode
            if rc != 0 or not out.exists():
                results[kind] = {"error": f"child exited with {rc}; see {workdir}"}
            else:
                results[kind] = json.loads(out.read_text())
                c = results[kind].get("chord", {})
                done = c.get("error") or f"{c.get('total_s', 0):.2f} s"
                cc.log(f"  [{kind}] chord: {done}; {time.time() - t:.0f} s in all")
    finally:
        if postgres is not None:
            postgres.__exit__(None, None, None)
        if rabbit is not None:
            cc.log("# stopping the RabbitMQ node ...")
            info = rabbit.stop()
            if info.get("survivors"):
                cc.log(f"# RabbitMQ processes left: {info['survivors']}")
        if redis is not None and redis.poll() is None:
            redis.terminate()
            try:
                redis.wait(10)
            except subprocess.TimeoutExpired:
                redis.kill()
                redis.wait()
    src_after = src_fingerprint()
    src_note = f"src/*.py fingerprint {src_before}" + (" (unchanged during the run)" if src_after == src_before
                                                       else f" at the start, {src_after} at the end: CHANGED")
    src_note += f"; 1-minute load average {load_before} at the start, {cc.loadavg()} at the end"
    text = report(args, results, {"when": f"{when:%Y-%m-%d %H:%M}", "versions": f"{versions()}; {src_note}"})
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    print()
    print(text)
    cc.log(f"\n(logs and raw JSON per broker: {rundir})")
    failed = any("error" in r or "error" in (r.get("chord") or {}) for r in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
