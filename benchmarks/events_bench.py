"""What task events cost: worker throughput with events off, on (-E), and on with a monitor reading.

    .venv/bin/python benchmarks/events_bench.py [--brokers sqlite,redis] [--n 10000] [--rounds 3] [--concurrency 2]

Per broker and mode: enqueue N no-op `add(i, i)` tasks with no worker running, start a worker
(`celeriac -A evtasks worker -c 2`, plus `-E` for the event modes), and time until the last
result is stored (tasks/s = N / (last result - worker start), start-up included, as in
bench.py). "on + monitor": a Receiver in this process reads every event while the worker
runs and counts them. Modes alternate within each round; the table shows the median of the
rounds and the cost relative to "off".

SQLite: a file in a fresh temp dir (broker, results and events). Redis: a private
redis-server on a free 127.0.0.1 port (no persistence), stopped by PID at the end; the
system servers are never touched.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

TASKS = textwrap.dedent("""
    import os
    from celeriac import Celeriac
    app = Celeriac("evbench", broker=os.environ["BENCH_BROKER"], backend=os.environ["BENCH_BROKER"])

    @app.task
    def add(x, y):
        return x + y
""")
MODES = ("off", "on", "on + monitor")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start")


def one_run(app: Any, add: Any, workdir: Path, n: int, concurrency: int, mode: str) -> dict[str, float]:
    app.control.purge()
    handles = [add.delay(i, i) for i in range(n)]
    counted = {"events": 0}
    receiver = None
    reader = None
    if mode == "on + monitor":
        receiver = app.events.Receiver(app.connection(), handlers={"*": lambda e: counted.__setitem__(
            "events", counted["events"] + 1)})
        receiver.subscribe()
        reader = threading.Thread(target=receiver.capture, daemon=True)
        reader.start()
    celeriac = str(Path(sys.executable).with_name("celeriac"))
    args = [celeriac, "-A", "evtasks", "worker", "-c", str(concurrency), "--loglevel=warning"]
    if mode != "off":
        args.append("-E")
    started = time.time()
    worker = subprocess.Popen(args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        handles[-1].get(timeout=300)
        wait_all = time.monotonic() + 300
        while not all(h.ready() for h in handles[-100:]) and time.monotonic() < wait_all:
            time.sleep(0.002)
        elapsed = time.time() - started
        wrong = sum(1 for i, h in enumerate(handles) if h.get(timeout=60) != 2 * i)
    finally:
        worker.terminate()
        worker.wait(60)
        if receiver is not None:
            time.sleep(0.5)  # the last batches of events
            receiver.should_stop = True
            assert reader is not None
            reader.join(5)
    return {"tasks_per_s": n / elapsed, "wrong": wrong, "events_read": counted["events"]}


def bench_broker(kind: str, n: int, rounds: int, concurrency: int) -> dict[str, list[dict[str, float]]]:
    workdir = Path(tempfile.mkdtemp(prefix=f"celeriac-evbench-{kind}-"))
    redis_proc = None
    if kind == "sqlite":
        url = f"sqlite:///{workdir / 'bench.db'}"
    elif kind == "redis":
        redis_proc, url = start_redis(workdir)
    else:
        raise SystemExit(f"unknown broker {kind!r}: sqlite or redis")
    (workdir / "evtasks.py").write_text(TASKS)
    os.environ["BENCH_BROKER"] = url
    for key in ("CELERIAC_BROKER_URL", "CELERIAC_RESULT_BACKEND"):
        os.environ.pop(key, None)
    sys.path.insert(0, str(workdir))
    sys.modules.pop("evtasks", None)
    import evtasks  # noqa: PLC0415

    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    try:
        one_run(evtasks.app, evtasks.add, workdir, min(n, 1000), concurrency, "off")  # warm-up
        for r in range(rounds):
            order = MODES if r % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                results[mode].append(one_run(evtasks.app, evtasks.add, workdir, n, concurrency, mode))
                print(f"  {kind} round {r + 1} {mode:>13}: {results[mode][-1]['tasks_per_s']:,.0f} tasks/s",
                      file=sys.stderr, flush=True)
    finally:
        evtasks.app.close()
        sys.path.remove(str(workdir))
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", default="sqlite,redis")
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    print(f"celeriac task events: worker -c {args.concurrency}, {args.n} no-op tasks, median of {args.rounds} "
          "rounds\n")
    print("| broker | events | tasks/s | cost vs off | events read by the monitor | wrong results |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for kind in args.brokers.split(","):
        runs = bench_broker(kind.strip(), args.n, args.rounds, args.concurrency)
        base = statistics.median(r["tasks_per_s"] for r in runs["off"])
        for mode in MODES:
            rate = statistics.median(r["tasks_per_s"] for r in runs[mode])
            cost = "" if mode == "off" else f"{(1 - rate / base) * 100:+.1f}%"  # + is slower
            read = statistics.median(r["events_read"] for r in runs[mode]) if mode == "on + monitor" else ""
            print(f"| {kind} | {mode} | {rate:,.0f} | {cost} | {read if read == '' else f'{read:,.0f}'} | "
                  f"{sum(int(r['wrong']) for r in runs[mode])} |", flush=True)


if __name__ == "__main__":
    main()
