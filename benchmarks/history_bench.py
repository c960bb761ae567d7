"""What the durable task history (the dashboard's data) costs the worker: throughput with
`task_history` on and off, on SQLite and Redis, rounds interleaved (off/on, on/off, ...).

    python benchmarks/history_bench.py [--brokers sqlite,redis] [--n 5000] [--rounds 3] [--prefill 100000]

Each run enqueues N `add(i, i)` tasks with no worker, starts `celeriac worker -c 2` and
times until every result is in (tasks/s, start-up included). It also reports the CPU time
per task of the worker's process tree (and of redis-server): on a busy shared machine that
is a steadier measure of the cost than the throughput), and the CPU per task of the pool
processes alone (read from /proc just before the worker stops: no start-up, the steadiest
figure). `--prefill` first puts that many records into the history, so that its writes
meet an index of a realistic size (the default retention keeps 100,000 tasks). Target:
history costs <= 5%.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from events_bench import start_redis  # noqa: E402

TASKS = textwrap.dedent("""
    import os
    from celeriac import Celeriac
    app = Celeriac("histbench", broker=os.environ["BENCH_BROKER"], backend=os.environ["BENCH_BROKER"])
    app.conf.task_history = os.environ.get("BENCH_HISTORY", "1") == "1"

    @app.task
    def add(x, y):
        return x + y
""")


def server_cpu(pid: int | None) -> float:
    """CPU seconds a server process (redis-server) has used so far."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pool_cpu(worker_pid: int) -> float:
    """CPU seconds the worker's pool processes (all their threads) have used so far."""
    children = Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text().split()
    return sum(server_cpu(int(pid)) for pid in children)


def prefill(app: Any, count: int) -> None:
    """`count` finished-task records in the history, written as the workers write them."""
    from celeriac.history import TaskRecord  # noqa: PLC0415

    start = time.time() - 3600
    for first in range(0, count, 5000):
        records = [TaskRecord(f"prefill-{os.urandom(8).hex()}-{i}", "histtasks.add", "SUCCESS", worker="prefill",
                              queue="celery", finished=start + i / 1000, updated=start + i / 1000,
                              args=f"[[{i}, {i}], {{}}, {{}}]", meta=b'{"status": "SUCCESS", "result": 0}')
                   for i in range(first, min(first + 5000, count))]
        app.backend.history_buffer._write(records)


def one_run(app: Any, add: Any, workdir: Path, n: int, history: bool,
            server_pid: int | None = None) -> tuple[float, float, float]:
    """(tasks/s, CPU µs per task of the worker's process tree plus the server, of the pool alone)."""
    app.control.purge()
    handles = [add.delay(i, i) for i in range(n)]
    celeriac = str(Path(sys.executable).with_name("celeriac"))
    env = dict(os.environ, BENCH_HISTORY="1" if history else "0")
    server_before = server_cpu(server_pid)
    started = time.time()
    worker = subprocess.Popen([celeriac, "-A", "histtasks", "worker", "-c", "2", "--loglevel=warning"], cwd=workdir,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        handles[-1].get(timeout=300)
        while not all(h.ready() for h in handles[-100:]):
            time.sleep(0.002)
        elapsed = time.time() - started
        pool = pool_cpu(worker.pid)
        assert all(h.get(timeout=60) == 2 * i for i, h in enumerate(handles)), "wrong results"
    finally:
        worker.terminate()
        # wait4: the CPU of the worker and of the pool processes it reaped (the whole tree)
        _pid, _status, usage = os.wait4(worker.pid, 0)
    cpu = usage.ru_utime + usage.ru_stime + server_cpu(server_pid) - server_before
    return n / elapsed, cpu / n * 1e6, pool / n * 1e6


def bench(kind: str, n: int, rounds: int, fill: int = 0) -> dict[str, list[tuple[float, float, float]]]:
    workdir = Path(tempfile.mkdtemp(prefix=f"celeriac-histbench-{kind}-"))
    redis_proc = None
    if kind == "sqlite":
        url = f"sqlite:///{workdir / 'bench.db'}"
    else:
        redis_proc, url = start_redis(workdir)
    (workdir / "histtasks.py").write_text(TASKS)
    os.environ["BENCH_BROKER"] = url
    for key in ("CELERIAC_BROKER_URL", "CELERIAC_RESULT_BACKEND"):
        os.environ.pop(key, None)
    sys.path.insert(0, str(workdir))
    import histtasks  # noqa: PLC0415

    out: dict[str, list[tuple[float, float, float]]] = {"off": [], "on": []}
    server = redis_proc.pid if redis_proc is not None else None
    try:
        prefill(histtasks.app, fill)
        one_run(histtasks.app, histtasks.add, workdir, min(n, 1000), True, server)  # warm-up
        for r in range(rounds):
            for mode in (("off", "on") if r % 2 == 0 else ("on", "off")):
                out[mode].append(one_run(histtasks.app, histtasks.add, workdir, n, mode == "on", server))
                rate, cpu, pool = out[mode][-1]
                print(f"  {kind} round {r + 1} history {mode:>3}: {rate:,.0f} tasks/s, {cpu:,.0f} µs CPU/task "
                      f"(pool {pool:,.0f}), load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
        kept = histtasks.app.backend.task_counts()
        print(f"  {kind}: history counted {sum(kept.values())} task outcomes", file=sys.stderr)
    finally:
        histtasks.app.close()
        sys.path.remove(str(workdir))
        sys.modules.pop("histtasks", None)
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", default="sqlite,redis")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prefill", type=int, default=0, help="history records written before the rounds")
    args = parser.parse_args()
    print("| broker | tasks/s off (median) | tasks/s on | throughput cost "
          "| CPU µs/task off (median) | CPU on | CPU cost | pool CPU µs/task off | pool on | pool cost |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind in args.brokers.split(","):
        result = bench(kind, args.n, args.rounds, args.prefill)
        off, on = (statistics.median(r[0] for r in result[m]) for m in ("off", "on"))
        cpu_off, cpu_on = (statistics.median(r[1] for r in result[m]) for m in ("off", "on"))
        pool_off, pool_on = (statistics.median(r[2] for r in result[m]) for m in ("off", "on"))
        print(f"| {kind} | {off:,.0f} | {on:,.0f} | {100 * (off - on) / off:+.1f}% | {cpu_off:,.0f} | {cpu_on:,.0f} "
              f"| {100 * (cpu_on - cpu_off) / cpu_off:+.1f}% | {pool_off:,.0f} | {pool_on:,.0f} "
              f"| {100 * (pool_on - pool_off) / pool_off:+.1f}% |", flush=True)


if __name__ == "__main__":
    main()
