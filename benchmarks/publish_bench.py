"""Publish speed, this tree against another: `delay()` one by one and a big group, no worker.

    .venv/bin/python benchmarks/publish_bench.py [--baseline-src PATH] [--brokers sqlite,redis] [--n 10000]
                                                 [--group-n 10000] [--rounds 5]

Per broker (SQLite: a file in a temp dir; Redis: one private redis-server on a free 127.0.0.1 port,
`--save '' --appendonly no`, FLUSHALL between phases) and per source tree (this checkout's `src/`, and with
`--baseline-src` another checkout's `src/`, e.g. `git worktree add /tmp/base main`), a child process with that
tree first on sys.path times, alternating trees round by round:

- enqueue: N x `add.delay(i, i)`, one by one (each returns once the broker has the message);
- group: `group(add.s(i, i) for i in range(GROUP_N)).apply_async()` (building the signatures included).

Each phase reports wall time and the client's own CPU time (`time.process_time`: the Python work, the
system calls, SQLite's writes; not the Redis server's), so a busy shared machine skews the CPU column less
than the wall one. The best of the rounds is shown, then the ratio this tree / baseline (above 1 = faster).
The queue must hold exactly the number of messages sent after each phase (checked, then purged). The default
queue is `celery`, so on Redis the messages are written in Celery's wire format too (docs/celery-interop.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import compare_celery as cc  # noqa: E402  (stdlib only: free_port, redis_cmd)

CHILD = r"""
import json, sys, time
from celeriac import Celeriac, group
url, n, group_n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
app = Celeriac("publishbench", broker=url, backend=url)

@app.task
def add(x, y):
    return x + y

def measure(name, fn, count):
    app.control.purge(["celery"])
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    queued = app.control.queue_sizes(["celery"]).get("celery", {}).get("ready")
    assert queued == count, f"{name}: {queued} queued, {count} sent"
    app.control.purge(["celery"])
    return {"wall_s": wall, "cpu_s": cpu}

add.delay(0, 0)  # warm-up: connections, scripts, the batch path
group(add.s(0, 0), add.s(1, 1)).apply_async()
out = {"enqueue": measure("enqueue", lambda: [add.delay(i, i) for i in range(n)], n),
       "group": measure("group", lambda: group(add.s(i, i) for i in range(group_n)).apply_async(), group_n)}
print(json.dumps(out))
"""


def run_child(src: Path, url: str, n: int, group_n: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERIAC_")}
    env["PYTHONPATH"] = str(src)
    done = subprocess.run([sys.executable, "-c", CHILD, url, str(n), str(group_n)], env=env,
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        sys.exit(f"child for {src} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def table(results: dict[str, dict[str, list[dict[str, Any]]]], counts: dict[str, int], trees: list[str]) -> list[str]:
    head = "| broker | phase | " + " | ".join(f"{t} wall /s | {t} CPU /s" for t in trees)
    if len(trees) == 2:
        head += " | wall ratio | CPU ratio"
    lines = [head + " |", "| --- | --- |" + " ---: |" * (2 * len(trees) + (2 if len(trees) == 2 else 0))]
    for broker, by_tree in results.items():
        for phase in ("enqueue", "group"):
            best = {t: (max(counts[phase] / r[phase]["wall_s"] for r in by_tree[t]),
                        max(counts[phase] / r[phase]["cpu_s"] for r in by_tree[t])) for t in trees}
            cells = [f"{best[t][0]:,.0f} | {best[t][1]:,.0f}" for t in trees]
            if len(trees) == 2:
                (wa, ca), (wb, cb) = best[trees[0]], best[trees[1]]
                cells += [f"**{wa / wb:.2f}x**", f"**{ca / cb:.2f}x**"]
            lines.append(f"| {broker} | {phase} ({counts[phase]:,}) | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-src", type=Path, help="another checkout's src/ directory to compare against")
    ap.add_argument("--brokers", default="sqlite,redis")
    ap.add_argument("--n", type=int, default=10000, help="delay() calls in the enqueue phase")
    ap.add_argument("--group-n", type=int, default=10000, help="members of the group")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    trees = {"this": HERE.parent / "src"}
    if args.baseline_src:
        trees["baseline"] = args.baseline_src.resolve()
    kinds = [k.strip() for k in args.brokers.split(",") if k.strip()]
    if "redis" in kinds and not shutil.which("redis-server"):
        sys.exit("redis-server not found on PATH")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="celeriac-publish-bench-"))
    redis = None
    try:
        for kind in kinds:
            if kind == "redis":
                port = cc.free_port()
                redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                          "--appendonly", "no", "--dir", str(workdir)], stdout=subprocess.DEVNULL)
                deadline = time.monotonic() + 10
                while True:  # until the server answers
                    try:
                        cc.redis_cmd(port, "PING")
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
                url = f"redis://127.0.0.1:{port}/0"
            else:
                url = f"sqlite:///{workdir}/publish.db"
            results[kind] = {t: [] for t in trees}
            for rnd in range(args.rounds):
                for name in (list(trees) if rnd % 2 == 0 else list(trees)[::-1]):
                    if kind == "redis":
                        cc.redis_cmd(port, "FLUSHALL")
                    results[kind][name].append(run_child(trees[name], url, args.n, args.group_n))
                print(f"  [{kind}] round {rnd + 1} done", file=sys.stderr, flush=True)
            if redis is not None:
                redis.terminate()
                redis.wait(timeout=10)
                redis = None
    finally:
        if redis is not None:
            redis.terminate()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nceleriac publish benchmark, {time.strftime('%Y-%m-%d %H:%M')}: best of {args.rounds} rounds; "
          f"trees: " + ", ".join(f"{k} = {v}" for k, v in trees.items()) + f"; load average {cc.loadavg()}\n")
    print("\n".join(table(results, {"enqueue": args.n, "group": args.group_n}, list(trees))))


if __name__ == "__main__":
    main()
