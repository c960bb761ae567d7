"""The client side of compare_celery.py, run unchanged for celeriac and for Celery.

Started by compare_celery.py with the system's own venv python and cwd = a temp dir holding that system's
`benchtasks.py` (an app + `add(x, y)` task on the benchmark Redis). Only the Celery API is used: `.delay()`,
`.ready()`, `.get(timeout=)`.

Protocol with the driver (which owns the worker process):
  1. enqueue N `add.delay(i, i)` one by one, timed, no worker running   -> prints "ENQUEUED"
  2. the driver starts the worker and writes its wall-clock start time on stdin
     -> read all N results in order: non-blocking `ready()`, 2 ms sleep when not ready; check every value
  3. 10 untimed warm-ups, then LAT sequential `add.delay(k, 1).get(timeout=10)` round trips (the system's own
     default result wait: a blocking BLMOVE in celeriac, the pub/sub result consumer in Celery)
  4. writes a JSON summary to --out                                       -> prints "DONE"
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib.metadata import PackageNotFoundError, version

sys.path.insert(0, os.getcwd())  # the driver's per-system temp dir with benchtasks.py
import benchtasks  # noqa: E402

POLL_SLEEP = 0.002
DRAIN_TIMEOUT = 600.0
WARMUP = 10


def pct(values: list[float], p: float) -> float:
    """Nearest rank (the same definition as bench.py and ../shared/bench-peers)."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(p / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for dist in ("celeriac", "celery", "kombu", "amqp", "pika", "redis", "hiredis"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--lat", type=int, default=500)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    add = benchtasks.add

    # 1. enqueue, no worker running
    handles = []
    t = time.perf_counter()
    for i in range(args.n):
        handles.append(add.delay(i, i))
    enqueue_s = time.perf_counter() - t
    sys.stdout.write("ENQUEUED\n")
    sys.stdout.flush()

    # 2. the driver has started the worker at t0 (time.time()); read every result in order
    t0 = float(sys.stdin.readline())
    wrong = 0
    t_first = None
    for i, handle in enumerate(handles):
        while not handle.ready():
            if time.time() - t0 > DRAIN_TIMEOUT:
                raise SystemExit(f"drain timeout at result {i}")
            time.sleep(POLL_SLEEP)
        if handle.get(timeout=10) != 2 * i:
            wrong += 1
        if t_first is None:
            t_first = time.time()
    t_done = time.time()
    handles = []

    # 3. sequential round trips on the idle, warm worker
    for k in range(WARMUP):
        add.delay(k, 1).get(timeout=10)
    lat_ms = []
    wrong_rt = 0
    for k in range(args.lat):
        t = time.perf_counter()
        value = add.delay(k, 1).get(timeout=10)
        lat_ms.append((time.perf_counter() - t) * 1000)
        if value != k + 1:
            wrong_rt += 1

    n = args.n
    result = {
        "versions": versions(),
        "n": n,
        "enqueue_s": enqueue_s,
        "enqueue_per_s": n / enqueue_s,
        "drain_s": t_done - t0,
        "tasks_per_s": n / (t_done - t0),
        "first_result_s": t_first - t0 if t_first is not None else None,
        "steady_tasks_per_s": (n - 1) / (t_done - t_first) if t_first is not None and t_done > t_first else None,
        "wrong_results": wrong,
        "lat_n": len(lat_ms),
        "p50_ms": pct(lat_ms, 50) if lat_ms else None,
        "p99_ms": pct(lat_ms, 99) if lat_ms else None,
        "mean_ms": sum(lat_ms) / len(lat_ms) if lat_ms else None,
        "max_ms": max(lat_ms) if lat_ms else None,
        "wrong_roundtrips": wrong_rt,
    }
    with open(args.out, "w") as f:
        json.dump(result, f)
    sys.stdout.write("DONE\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
