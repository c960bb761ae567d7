"""Where the PostgreSQL broker's statements, transactions and WAL flushes go, per task.

    python benchmarks/pg_profile.py [--n 5000] [--lat 200] [--top 12]

Starts a private PostgreSQL (default durability, plus pg_stat_statements) and measures three
phases with the server's own counters (pg_stat_statements calls, pg_stat_database
xact_commit, pg_stat_wal wal_sync = WAL flushes, the disk's real cost):
1. enqueue: N `add.delay(i, i)` one by one, no worker running (the client's cost per task);
2. drain: a worker (`-c 2`) runs the N tasks; nothing else talks to the server but one
   look every 0.2 s at whether the results are all in (the worker's cost per task);
3. round trips: LAT sequential `delay().get()` on the idle worker (client + worker per task).
A backend reports transactions and WAL counters now and then but always when it exits, so
each phase ends with the worker stopped and the client's connections closed (the worker's
start-up is counted in phases 2 and 3; pg_stat_statements counts at once, but does not see
BEGIN/COMMIT sent in a pipeline: transactions/task is the count of commits).
Numbers are per task; the top statements of each phase are listed with their calls per task.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import TASKS  # noqa: E402
from pg_private import private_postgres  # noqa: E402

_MARK = "/* pg_profile */"


def cpu_of_tree(pid: int) -> float:
    """CPU seconds (user + system) of a process and its live children."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid] + [int(p) for p in subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)],
                                                  capture_output=True, text=True).stdout.split()]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


WORKER_PID = 0
SERVER_PID = 0


def snapshot(conn: Any) -> dict[str, Any]:
    stmts = {q: c for q, c in conn.execute(
        f"{_MARK} SELECT query, sum(calls)::bigint FROM pg_stat_statements GROUP BY query").fetchall()
        if _MARK not in q}
    commits = conn.execute(f"{_MARK} SELECT sum(xact_commit)::bigint FROM pg_stat_database").fetchone()[0]
    syncs, records = conn.execute(f"{_MARK} SELECT wal_sync, wal_records FROM pg_stat_wal").fetchone()
    return {"stmts": stmts, "commits": int(commits), "wal_sync": int(syncs), "wal_records": int(records),
            "cpu_client": time.process_time(), "cpu_worker": cpu_of_tree(WORKER_PID) if WORKER_PID else 0.0,
            "cpu_server": cpu_of_tree(SERVER_PID)}


def report(name: str, before: dict[str, Any], after: dict[str, Any], n: int, seconds: float, top: int) -> None:
    calls = {q: c - before["stmts"].get(q, 0) for q, c in after["stmts"].items()}
    calls = {q: c for q, c in calls.items() if c > 0}
    total = sum(calls.values())
    print(f"\n## {name}: {n} tasks in {seconds:.2f} s ({n / seconds:,.0f}/s)\n")
    print(f"statements/task {total / n:.2f}, transactions/task {(after['commits'] - before['commits']) / n:.3f} "
          f"(incl. the 0.2 s looks), WAL flushes/task {(after['wal_sync'] - before['wal_sync']) / n:.3f}, "
          f"WAL records/task {(after['wal_records'] - before['wal_records']) / n:.1f}")
    cpu = {k: (after[f"cpu_{k}"] - before[f"cpu_{k}"]) * 1e6 / n for k in ("client", "worker", "server")}
    print(f"CPU µs/task: client {cpu['client']:.0f}, worker {cpu['worker']:.0f}, server {cpu['server']:.0f}; "
          f"load average {os.getloadavg()[0]:.2f}\n")
    print("| calls/task | statement |\n| ---: | --- |")
    for q, c in sorted(calls.items(), key=lambda kv: -kv[1])[:top]:
        print(f"| {c / n:.3f} | `{' '.join(q.split())[:150]}` |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--lat", type=int, default=200)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    with private_postgres({"shared_preload_libraries": "pg_stat_statements",
                           "pg_stat_statements.track": "all"}) as url:
        import psycopg
        mon = psycopg.connect(url, autocommit=True)
        mon.execute("CREATE EXTENSION pg_stat_statements")
        global SERVER_PID
        data = mon.execute("SHOW data_directory").fetchone()[0]
        SERVER_PID = int(Path(data, "postmaster.pid").read_text().split()[0])
        workdir = Path(tempfile.mkdtemp(prefix="celeriac-pgprofile-"))
        (workdir / "benchtasks.py").write_text(TASKS)
        os.chdir(workdir)
        sys.path.insert(0, str(workdir))
        os.environ["BENCH_BROKER"] = os.environ["BENCH_BACKEND"] = url
        import benchtasks
        add, app = benchtasks.add, benchtasks.app
        app.control.purge()  # the schema exists before counting
        add.delay(0, 0)
        app.control.purge()
        n = args.n

        celeriac = str(Path(sys.executable).with_name("celeriac"))

        def start_worker() -> subprocess.Popen[bytes]:
            global WORKER_PID
            proc = subprocess.Popen([celeriac, "-A", "benchtasks", "worker", "-c", "2", "--loglevel=warning"],
                                    cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            WORKER_PID = proc.pid
            return proc

        def settle(worker: subprocess.Popen[bytes] | None) -> float:
            """End the phase: a backend reports its transactions and WAL counters to the
            statistics only now and then, but always when it exits - so the worker stops and
            the client closes its connections before the counters are read. Returns the
            worker's CPU seconds."""
            global WORKER_PID
            cpu = cpu_of_tree(worker.pid) if worker is not None else 0.0
            if worker is not None:
                worker.terminate()
                worker.wait(60)
                WORKER_PID = 0
            app.broker.db.close_thread()
            time.sleep(0.5)  # the backends' exits
            return cpu

        settle(None)
        before, t = snapshot(mon), time.perf_counter()
        handles = [add.delay(i, i) for i in range(n)]
        seconds = time.perf_counter() - t
        settle(None)
        report("enqueue (client)", before, snapshot(mon), n, seconds, args.top)

        before, t = snapshot(mon), time.perf_counter()
        worker = start_worker()
        while mon.execute(f"{_MARK} SELECT count(*) FROM celeriac.results").fetchone()[0] < n:
            time.sleep(0.2)
        seconds = time.perf_counter() - t
        before["cpu_worker"], after_cpu = 0.0, settle(worker)
        after = snapshot(mon)
        after["cpu_worker"] = after_cpu
        report("drain (worker, start-up included)", before, after, n, seconds, args.top)
        wrong = sum(h.get(timeout=10) != 2 * i for i, h in enumerate(handles))

        settle(None)
        before = snapshot(mon)
        worker = start_worker()
        for k in range(10):
            add.delay(k, 1).get(timeout=10)
        t = time.perf_counter()
        latencies = []
        for k in range(args.lat):
            t0 = time.perf_counter()
            wrong += add.delay(k, 1).get(timeout=10) != k + 1
            latencies.append((time.perf_counter() - t0) * 1000)
        seconds = time.perf_counter() - t
        before["cpu_worker"], after_cpu = 0.0, settle(worker)
        after = snapshot(mon)
        after["cpu_worker"] = after_cpu
        report("round trips (client + worker, worker start-up and 10 warm-ups included)", before, after,
               args.lat, seconds, args.top)
        latencies.sort()
        print(f"\nround trip p50 {latencies[len(latencies) // 2]:.2f} ms; wrong results: {wrong}")
        mon.close()


if __name__ == "__main__":
    main()
