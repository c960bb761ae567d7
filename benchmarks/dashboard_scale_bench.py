"""The dashboard at scale: 1,000,000 tasks of history (SQLite), then the time of the tasks page
(filtered by state, by name), its JSON twin and /metrics, and the server's memory.

    python benchmarks/dashboard_scale_bench.py [--tasks 1000000] [--repeat 5]

Target: each page under 300 ms; memory flat as the history grows (the dashboard reads a page
of the history at a time, never the whole of it).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from starlette.testclient import TestClient

from celeriac import Celeriac
from celeriac.transports.sqlite import history as sqlite_history
from celeriac.dashboard.web import create_app
from celeriac.history import TaskRecord

NAMES = [f"shop.task_{i:02d}" for i in range(20)]
STATES = ["SUCCESS"] * 90 + ["FAILURE"] * 7 + ["RETRY"] * 2 + ["REVOKED"]
META = b'{"task_id":"x","status":"SUCCESS","result":42,"traceback":null,"children":[]}'


def fill(app: Celeriac, total: int, already: int) -> None:
    now = time.time()
    chunk = 20_000
    started = time.monotonic()
    for start in range(already, total, chunk):
        records = []
        for i in range(start, min(total, start + chunk)):
            at = now - (total - i) * 0.01
            records.append(TaskRecord(str(uuid.uuid4()), random.choice(NAMES), random.choice(STATES),
                                      worker=f"celeriac@host{i % 4}", queue="celery", updated=at, received=at - 0.002,
                                      started=at - 0.001, finished=at, runtime=0.001,
                                      args=f'[[{i}, "order-{i}"], {{}}]', meta=META))
        app.backend.history_db.write(lambda c, r=records: sqlite_history.write(c, r))  # type: ignore[attr-defined]
    print(f"  filled {total - already:,} records in {time.monotonic() - started:.0f}s", file=sys.stderr)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def timed(client: TestClient, path: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        answer = client.get(path)
        times.append(time.perf_counter() - t)
        assert answer.status_code == 200, (path, answer.status_code)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='celeriac-scale-')) / 'scale.db'}"
    app = Celeriac("scale", broker=url, backend=url)
    client = TestClient(create_app(app, events=False))
    paths = ["/tasks?state=FAILURE", f"/tasks?name={NAMES[3]}", "/tasks?state=REVOKED&name=shop.task_07",
             "/api/tasks?state=FAILURE", "/tasks", "/metrics", "/task/none"]
    print("| history size | " + " | ".join(paths) + " | server RSS |")
    print("| --- |" + " --- |" * (len(paths) + 1))
    size = 0
    for step in sorted({min(args.tasks, s) for s in (100_000, args.tasks)}):
        fill(app, step, size)
        size = step
        row = [f"{timed(client, p, args.repeat):.0f} ms" for p in paths]
        print(f"| {size:,} | " + " | ".join(row) + f" | {rss_mb():.0f} MB |", flush=True)


if __name__ == "__main__":
    main()
