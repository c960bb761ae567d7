"""CPU time per message through one pool slot's path (Consumer.handle_batch), no broker I/O.

Publishes N no-op tasks on the in-process memory broker, then fetches them in batches of
100 and handles them in this process: decode, checks, run, finish and the batch's writes.
Prints the best of R runs in CPU microseconds per message (process time, so other load on
the machine matters less than for wall-clock benchmarks).

    .venv/bin/python benchmarks/worker_path_bench.py [--n 20000] [--runs 5]
"""

from __future__ import annotations

import argparse
import time
import uuid

from celeriac import Celeriac
from celeriac.worker.consumer import Consumer


def one_run(n: int) -> float:
    name = uuid.uuid4().hex
    app = Celeriac("bench", broker=f"memory://{name}", backend=f"memory://{name}", set_as_current=False)

    @app.task(name="bench.add")
    def add(x: int, y: int) -> int:
        return x + y

    for i in range(n):
        add.delay(i, i)
    consumer = Consumer(app, worker_id="w", owner="w/0.0", queues=["celery"], prefetch=100, hostname="w@bench")
    started = time.process_time()
    done = 0
    while done < n:
        deliveries = app.broker.fetch(["celery"], "w", "w/0.0", 100, timeout=0.1)
        consumer.handle_batch(deliveries)
        done += len(deliveries)
    spent = time.process_time() - started
    app.close()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    best = min(one_run(args.n) for _ in range(args.runs))
    print(f"{best / args.n * 1e6:.1f} us CPU per message ({args.n / best:,.0f} messages/s on one core), "
          f"best of {args.runs}")


if __name__ == "__main__":
    main()
