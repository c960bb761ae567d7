"""How big the PostgreSQL tables get: the hot path of N tasks, driven through the broker and
result store interfaces as a worker drives them, on a private server (fsync on).

    python benchmarks/pg_sizing.py [--n 1000000] [--batch 500] [--backlog 5000] [--broker postgresql://...]

Per batch: publish BATCH messages (as a client would), claim BATCH (a worker's fetch), store
their results and ack them in one transaction (a worker's flush); every 2 s the broker's
housekeeping (a worker supervisor's heartbeat: it vacuums the hot tables). A backlog of BACKLOG
messages is kept waiting throughout, as under load. Every N/10 tasks it prints the size
(table + indexes + TOAST) and the live and dead rows of `messages` and `results`, so the
growth of the hot table (should be none) and of the results (one row per task, kept for
`result_expires`) can be seen; at the end the same after a VACUUM.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def sizes(url: str) -> dict[str, dict[str, Any]]:
    import psycopg
    out: dict[str, dict[str, Any]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for table in ("messages", "delayed", "results"):
            total, heap, live, dead = conn.execute(
                "SELECT pg_total_relation_size(c.oid), pg_relation_size(c.oid), s.n_live_tup, s.n_dead_tup "
                "FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid "
                "WHERE c.relname = %s AND s.schemaname = 'celeriac'", (table,)).fetchone()  # type: ignore[misc]
            out[table] = {"total_mb": round(total / 2**20, 2), "heap_mb": round(heap / 2**20, 2),
                          "live": live, "dead": dead}
    return out


def run(url: str, n: int, batch: int, backlog: int) -> None:
    from celeriac import protocol
    from celeriac.backends import create_result_store
    from celeriac.brokers import Outgoing, create_broker

    broker, store = create_broker(url), create_result_store(url)
    payload = protocol.pack(protocol.build_task_message("x", "bench.add", (1, 2), {}))

    def publish(count: int) -> None:
        broker.publish([Outgoing("celery", payload) for _ in range(count)])

    publish(backlog)
    broker.heartbeat("w1", 3600)
    done, started, step = 0, time.monotonic(), max(batch, n // 10)
    beat = 0.0
    while done < n:
        if time.monotonic() >= beat:  # what a worker's supervisor does every heartbeat (2 s)
            beat = time.monotonic() + 2.0
            broker.housekeeping()
        publish(batch)
        got = broker.fetch(["celery"], "w1", "w1/0", batch, timeout=0)
        results = [store.encode({"task_id": f"t{done + i}", "status": "SUCCESS", "result": 3, "traceback": None,
                                 "children": [], "date_done": None}) for i in range(len(got))]
        with broker.transaction():
            store.store(results)
            broker.ack(got)
        done += len(got)
        if done % step < batch:
            rate = done / (time.monotonic() - started)
            print(json.dumps({"tasks": done, "per_s": round(rate), **sizes(url)}), flush=True)
    import psycopg
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM celeriac.messages")
        conn.execute("VACUUM celeriac.results")
    print(json.dumps({"after": "VACUUM", **sizes(url)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--backlog", type=int, default=5000)
    parser.add_argument("--broker", default=None, help="a postgresql:// URL (default: a private server)")
    args = parser.parse_args()
    if args.broker:
        run(args.broker, args.n, args.batch, args.backlog)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from pg_private import private_postgres
    with private_postgres() as url:
        run(url, args.n, args.batch, args.backlog)


if __name__ == "__main__":
    main()
