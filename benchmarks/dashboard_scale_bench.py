"""The dashboard at scale: 1,000,000 tasks of history in each result store (SQLite, Redis,
PostgreSQL), then the time of the tasks page (filtered by state, by name, searched), its JSON
twin, one task's page and /metrics, and the server's memory.

    python benchmarks/dashboard_scale_bench.py [--stores sqlite,redis,postgres] [--tasks 1000000] [--repeat 5]

The records go in through each store's own history writer (the function a worker's
HistoryBuffer calls), in batches of 20,000. Redis is a private `redis-server` on a free
loopback port, PostgreSQL a private server (benchmarks/pg_private.py); both are stopped at
the end. The history keeps at most `task_history_max` records (100,000 by default): this
benchmark sets it to the size it fills, as a team keeping a million would.

Target: each page under 300 ms; memory flat as the history grows (the dashboard reads a page
of the history at a time, never the whole of it).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

from starlette.testclient import TestClient

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import compare_celery as cc  # noqa: E402  (stdlib only: free_port, redis_cmd)
from pg_private import private_postgres  # noqa: E402

from celeriac import Celeriac  # noqa: E402
from celeriac.dashboard.web import create_app  # noqa: E402
from celeriac.history import TaskRecord  # noqa: E402

NAMES = [f"shop.task_{i:02d}" for i in range(20)]
STATES = ["SUCCESS"] * 90 + ["FAILURE"] * 7 + ["RETRY"] * 2 + ["REVOKED"]
META = b'{"task_id":"x","status":"SUCCESS","result":42,"traceback":null,"children":[]}'
CHUNK = 20_000


def task_id(run: str, i: int) -> str:
    """The i-th record's task id: random-looking (as uuid4s are), made again on demand rather
    than kept (a million ids would be 100 MB of this process's memory, which is measured)."""
    return str(uuid.UUID(bytes=hashlib.md5(f"{run}-{i}".encode()).digest(), version=4))


def records(start: int, end: int, total: int, now: float, run: str) -> list[TaskRecord]:
    out = []
    for i in range(start, end):
        at = now - (total - i) * 0.01
        out.append(TaskRecord(task_id(run, i), random.choice(NAMES), random.choice(STATES),
                              worker=f"celeriac@host{i % 4}", queue="celery", updated=at, received=at - 0.002,
                              started=at - 0.001, finished=at, runtime=0.001, args=f'[[{i}, "order-{i}"], {{}}]',
                              meta=META))
    return out


def fill(app: Celeriac, total: int, already: int, now: float, run: str) -> None:
    write = app.backend.history_buffer._write  # type: ignore[attr-defined]  # what the worker's buffer calls
    started = time.monotonic()
    for start in range(already, total, CHUNK):
        write(records(start, min(total, start + CHUNK), total, now, run))
    print(f"  filled {total - already:,} records in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)


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


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    if not shutil.which("redis-server"):
        sys.exit("redis-server not found on PATH (apt-get install redis-server)")
    workdir, port = Path(tempfile.mkdtemp(prefix="celeriac-scale-redis-")), cc.free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                cc.redis_cmd(port, "PING", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    sys.exit("the private redis-server did not start")
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def store_url(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        workdir = Path(tempfile.mkdtemp(prefix="celeriac-scale-"))
        try:
            yield f"sqlite:///{workdir / 'scale.db'}"
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    elif kind == "redis":
        with private_redis() as url:
            yield url
    elif kind == "postgres":
        with private_postgres() as url:
            yield url
    else:
        sys.exit(f"unknown store {kind!r}: sqlite, redis or postgres")


def search_to(client: TestClient, text: str, wanted: str) -> tuple[float, int, int]:
    """Follow a search's pages (next_until) until `wanted` shows: (seconds, pages, found)."""
    started, until, pages = time.perf_counter(), None, 0
    while True:
        params = {"search": text, **({"until": until} if until is not None else {})}
        body = client.get("/api/tasks", params=params).json()
        pages += 1
        if any(t["task_id"] == wanted for t in body["tasks"]) or body["next_until"] is None:
            found = sum(t["task_id"] == wanted for t in body["tasks"])
            return time.perf_counter() - started, pages, found
        until = body["next_until"]


def run_store(kind: str, total: int, repeat: int) -> None:
    run, middle = uuid.uuid4().hex, total // 2
    needle = task_id(run, middle)
    paths = ["/tasks?state=FAILURE", f"/tasks?name={NAMES[3]}", "/tasks?state=REVOKED&name=shop.task_07",
             "/api/tasks?state=FAILURE", "/tasks", f"/tasks?search=order-{middle}%22",
             f"/tasks?search={needle[:13]}", f"/task/{needle}", "/metrics"]
    with store_url(kind) as url:
        app = Celeriac("scale", broker=url, backend=url, task_history_max=total)
        client = TestClient(create_app(app, events=False))
        print(f"\n{kind}: {url.split('@')[-1]}\n")
        print("| history size | " + " | ".join(f"`{p}`" for p in paths) + " | server RSS |")
        print("| --- |" + " ---: |" * (len(paths) + 1), flush=True)
        size, now = 0, time.time()
        searches: list[str] = []
        for step in sorted({min(total, s) for s in (100_000, total)}):
            fill(app, step, size, now, run)
            size = step
            row = [f"{timed(client, p, repeat):.0f} ms" for p in paths]
            print(f"| {size:,} | " + " | ".join(row) + f" | {rss_mb():.0f} MB |", flush=True)
            if size < total:
                continue  # the middle record is written with the last batches
            took, pages, found = search_to(client, f'order-{middle}"', needle)
            searches.append(f"- {size:,} records: the search for `order-{middle}\"` (the record "
                            f"{size - middle:,}th from the newest) found it {found} time(s) after {pages} page(s), "
                            f"{took * 1000:.0f} ms in all")
        print("\n" + "\n".join(searches), flush=True)
        app._reset_connections()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", default="sqlite,redis,postgres")
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"dashboard_scale_bench: {args.tasks:,} records per store, median of {args.repeat} requests per page "
          f"(in-process Starlette TestClient), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    for kind in args.stores.split(","):
        run_store(kind.strip(), args.tasks, args.repeat)


if __name__ == "__main__":
    main()
