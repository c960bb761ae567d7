"""celeriac's own benchmark: enqueue rate, throughput and round-trip latency.

    python benchmarks/bench.py [--broker URL | --postgres] [--n 10000] [--lat 500] [--concurrency 2]

With no --broker it runs on the embedded SQLite default in a fresh temporary directory;
--postgres starts a private PostgreSQL server (default durability) for the run.
Phases (the same as ../shared/bench-peers): enqueue N no-op `add(i, i)` tasks one by one
with no worker running; start a worker (`-c 2`) and read all N results in order
(tasks/s = N / (last result - worker start), start-up included); then LAT sequential
`delay().get()` round trips on the idle worker (p50/p99). Also the group-style batched
publish rate (`app.publish` of N messages in one call), and the worker's RSS/PSS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

TASKS = textwrap.dedent("""
    import os
    from celeriac import Celeriac
    app = Celeriac("bench", broker=os.environ.get("BENCH_BROKER") or None,
                   backend=os.environ.get("BENCH_BACKEND") or None)

    @app.task
    def add(x, y):
        return x + y
""")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(p / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def memory_of_tree(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MB summed over the worker's process tree."""
    pids = [pid]
    try:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
        pids += [int(p) for p in out.split()]
    except FileNotFoundError:
        pass
    rss = pss = 0.0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) / 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) / 1024
        except OSError:
            pass
    return rss, pss


def run(args: argparse.Namespace) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="celeriac-bench-"))
    (workdir / "benchtasks.py").write_text(TASKS)
    os.chdir(workdir)
    sys.path.insert(0, str(workdir))
    if args.broker:
        os.environ["BENCH_BROKER"] = args.broker
        os.environ["BENCH_BACKEND"] = args.backend or args.broker
    import benchtasks

    add, app = benchtasks.add, benchtasks.app
    app.control.purge()
    n = args.n
    started = time.perf_counter()
    handles = [add.delay(i, i) for i in range(n)]
    enqueue_s = time.perf_counter() - started

    celeriac = str(Path(sys.executable).with_name("celeriac"))
    worker_start = time.time()
    worker = subprocess.Popen([celeriac, "-A", "benchtasks", "worker", "-c", str(args.concurrency),
                               "--loglevel=warning"], cwd=workdir, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wrong = 0
        for i, handle in enumerate(handles):
            while not handle.ready():
                time.sleep(0.002)
            if handle.get(timeout=10) != 2 * i:
                wrong += 1
        drain_s = time.time() - worker_start
        for k in range(10):
            add.delay(k, 1).get(timeout=10)
        latencies = []
        for k in range(args.lat):
            t = time.perf_counter()
            value = add.delay(k, 1).get(timeout=10)
            latencies.append((time.perf_counter() - t) * 1000)
            if value != k + 1:
                wrong += 1
        rss, pss = memory_of_tree(worker.pid)
    finally:
        worker.terminate()
        worker.wait(30)

    from celeriac import protocol
    from celeriac.brokers import Outgoing
    app.control.purge()
    messages = [Outgoing("bench-group", protocol.pack(protocol.build_task_message(
        f"g{i}", "benchtasks.add", (i, i), {}))) for i in range(n)]
    started = time.perf_counter()
    app.publish(messages)
    group_publish_s = time.perf_counter() - started
    app.control.purge(["bench-group"])
    return {
        "n": n, "enqueue_per_s": n / enqueue_s, "tasks_per_s": n / drain_s,
        "p50_ms": pct(latencies, 50), "p99_ms": pct(latencies, 99), "rss_mb": rss, "pss_mb": pss,
        "batched_publish_per_s": n / group_publish_s, "wrong": wrong,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default=None, help="broker URL (default: embedded SQLite)")
    parser.add_argument("--backend", default=None)
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--lat", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--postgres", action="store_true",
                        help="start a private PostgreSQL (fsync on) and use it as broker and result store")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.postgres:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from pg_private import private_postgres
        with private_postgres() as url:
            args.broker = url
            result = run(args)
    else:
        result = run(args)
    if args.json:
        print(json.dumps(result))
        return
    label = args.broker or "embedded SQLite (default)"
    print(f"celeriac on {label}, {args.n} tasks, worker -c {args.concurrency}, {args.lat} round trips\n")
    print("| enqueue/s | tasks/s | p50 round trip | p99 | batched publish/s | worker RSS | PSS | wrong |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {result['enqueue_per_s']:,.0f} | {result['tasks_per_s']:,.0f} | {result['p50_ms']:.2f} ms "
          f"| {result['p99_ms']:.2f} ms | {result['batched_publish_per_s']:,.0f} | {result['rss_mb']:.0f} MB "
          f"| {result['pss_mb']:.0f} MB | {result['wrong']} |")


if __name__ == "__main__":
    main()
