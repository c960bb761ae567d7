"""The asyncio client against the blocking one, on Redis, from one process.

    python benchmarks/aio_bench.py [--broker redis://127.0.0.1:6379/0] [--n 1000] [--rounds 3] [--concurrency 2]

Without --broker it starts a private redis-server (no persistence) on a free loopback port.
A worker (`-c 2`) runs the no-op `add`; then, per round, with the worker warm:

- async:          N concurrent `await add.adelay(i, i)` + `await result.aget()` on one event loop;
- sync one by one: one thread, N times `add.delay(i, i).get()` (a request handler's pattern);
- sync send-all:   one thread, N `add.delay(i, i)`, then N `get()` in order (the best one
                   thread can do with the blocking client);
- worker ceiling:  N tasks sent as one group (one round trip) until the last result: what
                   the worker can do at all, which bounds every client above.

Prints tasks/s per round and the median ratios async / sync. Client, worker and Redis share
the machine's cores (`nproc`), so the numbers depend on it and on what else runs there.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

TASKS = textwrap.dedent("""
    import os
    from celeriac import Celeriac
    app = Celeriac("aiobench", broker=os.environ["BENCH_BROKER"], backend=os.environ["BENCH_BROKER"])

    @app.task
    def add(x, y):
        return x + y
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not found: install it or pass --broker redis://...")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


async def async_round(tasks: Any, n: int) -> float:
    async def one(i: int) -> None:
        result = await tasks.add.adelay(i, i)
        assert await result.aget(timeout=120) == 2 * i

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - started)


def sync_one_by_one(tasks: Any, n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        assert tasks.add.delay(i, i).get(timeout=120) == 2 * i
    return n / (time.perf_counter() - started)


def sync_send_all(tasks: Any, n: int) -> float:
    started = time.perf_counter()
    results = [tasks.add.delay(i, i) for i in range(n)]
    for i, result in enumerate(results):
        assert result.get(timeout=120) == 2 * i
    return n / (time.perf_counter() - started)


def worker_capacity(tasks: Any, n: int) -> float:
    """The ceiling: N tasks published as one group (one round trip), until the last result."""
    from celeriac import group
    started = time.perf_counter()
    results = group(tasks.add.s(i, i) for i in range(n)).apply_async()
    assert results.get(timeout=120) == [2 * i for i in range(n)]
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", help="a Redis URL (default: a private redis-server)")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="celeriac-aiobench-"))
    server = None
    url = args.broker
    if url is None:
        server, url = start_redis(workdir)
    (workdir / "bench_tasks.py").write_text(TASKS)
    os.environ["BENCH_BROKER"] = url
    sys.path.insert(0, str(workdir))
    import bench_tasks as tasks
    env = dict(os.environ, PYTHONPATH=str(workdir))
    celeriac = shutil.which("celeriac", path=str(Path(sys.executable).parent)) or "celeriac"
    worker = subprocess.Popen([celeriac, "-A", "bench_tasks", "worker", "-c",
                               str(args.concurrency), "--loglevel=warning"], cwd=workdir, env=env)
    runner = asyncio.Runner()  # one event loop for every async round, as in a long-lived web app
    try:
        tasks.add.delay(0, 0).get(timeout=60)  # worker up and warm
        runner.run(async_round(tasks, 50))  # the loop's connections opened
        rates: dict[str, list[float]] = {"async": [], "sync one by one": [], "sync send-all": [],
                                         "worker ceiling": []}
        for round_no in range(1, args.rounds + 1):
            rates["async"].append(runner.run(async_round(tasks, args.n)))
            rates["sync one by one"].append(sync_one_by_one(tasks, args.n))
            rates["sync send-all"].append(sync_send_all(tasks, args.n))
            rates["worker ceiling"].append(worker_capacity(tasks, args.n))
            print(f"round {round_no}: " + ", ".join(f"{k} {v[-1]:,.0f} tasks/s" for k, v in rates.items()))
        median = {k: statistics.median(v) for k, v in rates.items()}
        print(f"\n{args.n} tasks per round, worker -c {args.concurrency}, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}")
        for k, v in median.items():
            print(f"  {k:16} {v:9,.0f} tasks/s (median of {args.rounds})")
        print(f"  async / sync one by one: {median['async'] / median['sync one by one']:.1f}x")
        print(f"  async / sync send-all:   {median['async'] / median['sync send-all']:.1f}x")
    finally:
        runner.close()
        worker.terminate()
        worker.wait(30)
        if server is not None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
