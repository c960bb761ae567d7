"""The tutorial end to end: a real worker on the embedded SQLite default, calls, answers.

Run it with `bash scripts/demo.sh` (or `python examples/demo.py` in the venv).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, UTC
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    os.chdir(HERE)  # the worker and this client share ./celeriac.db, as the tutorial says
    for leftover in HERE.glob("celeriac.db*"):
        leftover.unlink()
    sys.path.insert(0, str(HERE))
    celeriac = str(Path(sys.executable).with_name("celeriac"))
    print("$ celeriac -A tasks worker --loglevel=info -c 2")
    worker = subprocess.Popen([celeriac, "-A", "tasks", "worker", "--loglevel=info", "-c", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ready = threading.Event()

    def relay() -> None:
        assert worker.stdout is not None
        for line in worker.stdout:
            print(f"  worker | {line.rstrip()}")
            if " ready." in line:
                ready.set()

    threading.Thread(target=relay, daemon=True).start()
    if not ready.wait(30):
        print("the worker did not become ready in 30 s")
        worker.kill()
        return 1
    failures = 0
    try:
        from celeriac import chord, group

        from tasks import add, divide, fetch, fetch_many, mul, unreliable, xsum

        def show(label: str, result: object) -> None:
            print(f"client | {label:<48} -> {result}")

        r = add.delay(2, 3)
        show("add.delay(2, 3).state (just sent)", r.state)
        show("add.delay(2, 3).get(timeout=10)", r.get(timeout=10))
        show("its state now", r.state)

        started = time.monotonic()
        r = add.apply_async((4, 4), countdown=2)
        value = r.get(timeout=10)
        show("add.apply_async((4, 4), countdown=2)", f"{value} after {time.monotonic() - started:.1f}s")

        r = add.apply_async((1, 1), eta=datetime.now(UTC) + timedelta(seconds=1))
        show("add.apply_async((1, 1), eta=now+1s)", r.get(timeout=10))

        r = add.apply_async((5, 5), expires=datetime.now(UTC) - timedelta(seconds=1))
        time.sleep(1)
        show("add.apply_async(expires=in the past).state", r.state)

        r = fetch.delay("https://example.com")
        show("fetch.delay(url) (retries twice)", r.get(timeout=20))

        r = unreliable.delay(6, 7)
        try:
            show("unreliable.delay(6, 7) (@retry decorator)", r.get(timeout=30))
        except ConnectionError as exc:
            show("unreliable.delay(6, 7) (@retry decorator)", f"gave up after 3 retries: {exc!r}")

        r = divide.delay(1, 0)
        try:
            r.get(timeout=10)
        except ZeroDivisionError as exc:
            show("divide.delay(1, 0).get() raised", repr(exc))
        show("its state", r.state)
        show("its traceback ends with", (r.traceback or "").strip().splitlines()[-1])

        started = time.monotonic()
        results = [fetch_many.delay(i) for i in range(100)]
        total = sum(x.get(timeout=30) for x in results)
        show("100 async tasks of 0.5 s each", f"sum {total} in {time.monotonic() - started:.2f}s")

        show("add.apply((2, 3)).get() (in this process)", add.apply((2, 3)).get())

        show("(add.s(2, 2) | add.s(4) | mul.s(8)).delay()", (add.s(2, 2) | add.s(4) | mul.s(8)).delay().get(timeout=10))
        show("group(add.s(i, i) for i in range(10))()", group(add.s(i, i) for i in range(10))().get(timeout=10))
        show("chord(add.s(i, i) for i in range(100))(xsum.s())",
             chord(add.s(i, i) for i in range(100))(xsum.s()).get(timeout=20))
    except Exception as exc:  # the demo reports, then stops the worker either way
        failures += 1
        print(f"client | demo step failed: {exc!r}")
    finally:
        print("$ kill -TERM <worker>  (warm shutdown)")
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
        time.sleep(0.1)
        print(f"worker exited with status {code}")
    return 1 if failures or code else 0


if __name__ == "__main__":
    sys.exit(main())
