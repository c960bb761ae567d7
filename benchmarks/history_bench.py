"""What the durable task history (the dashboard's data) costs the worker: throughput with
`task_history` on and off, on SQLite and Redis, rounds interleaved (off/on, on/off, ...).

    python benchmarks/history_bench.py [--brokers sqlite,redis] [--n 5000] [--rounds 3]

Each run enqueues N `add(i, i)` tasks with no worker, starts `celeriac worker -c 2` and
times until every result is in (tasks/s, start-up included). Target: history costs <= 5%.
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


def one_run(app: Any, add: Any, workdir: Path, n: int, history: bool) -> float:
    app.control.purge()
    handles = [add.delay(i, i) for i in range(n)]
    celeriac = str(Path(sys.executable).with_name("celeriac"))
    env = dict(os.environ, BENCH_HISTORY="1" if history else "0")
    started = time.time()
    worker = subprocess.Popen([celeriac, "-A", "histtasks", "worker", "-c", "2", "--loglevel=warning"], cwd=workdir,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        handles[-1].get(timeout=300)
        while not all(h.ready() for h in handles[-100:]):
            time.sleep(0.002)
        elapsed = time.time() - started
        assert all(h.get(timeout=60) == 2 * i for i, h in enumerate(handles)), "wrong results"
    finally:
        worker.terminate()
        worker.wait(60)
    return n / elapsed


def bench(kind: str, n: int, rounds: int) -> dict[str, list[float]]:
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

    out: dict[str, list[float]] = {"off": [], "on": []}
    try:
        one_run(histtasks.app, histtasks.add, workdir, min(n, 1000), True)  # warm-up
        for r in range(rounds):
            for mode in (("off", "on") if r % 2 == 0 else ("on", "off")):
                out[mode].append(one_run(histtasks.app, histtasks.add, workdir, n, mode == "on"))
                print(f"  {kind} round {r + 1} history {mode:>3}: {out[mode][-1]:,.0f} tasks/s", file=sys.stderr)
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
    args = parser.parse_args()
    print("| broker | history off (tasks/s, median) | history on | cost |")
    print("| --- | --- | --- | --- |")
    for kind in args.brokers.split(","):
        result = bench(kind, args.n, args.rounds)
        off, on = statistics.median(result["off"]), statistics.median(result["on"])
        print(f"| {kind} | {off:,.0f} | {on:,.0f} | {100 * (off - on) / off:+.1f}% |", flush=True)


if __name__ == "__main__":
    main()
