"""Tasks used by the integration tests; the worker imports this module with -A tasks_app."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from celeriac import Celeriac, Task
from celeriac.decorators import retry

app = Celeriac("tasks_app")
app.conf.worker_heartbeat_interval = 0.5
app.conf.worker_lease_timeout = 3.0
app.conf.worker_autoscaler_keepalive = 1.0  # --autoscale tests: shrink after 1 s idle, not 30
# Event tests (tests/integration/test_events.py) bound the event stream to see retention at work.
if os.environ.get("EVENTS_TEST_SENT"):  # worker and beat processes send task-sent for what they publish
    app.conf.task_send_sent_event = True
if os.environ.get("EVENTS_TEST_MAX_LEN"):
    app.conf.broker_transport_options = {"events_max_len": int(os.environ["EVENTS_TEST_MAX_LEN"])}
if os.environ.get("PG_TEST_CLAIMS_SHARED"):  # test_postgres.py: with and without siblings' shared claims
    app.conf.broker_transport_options = {"claims_shared": os.environ["PG_TEST_CLAIMS_SHARED"] == "1"}
# Beat tests (tests/integration/test_beat.py) describe their schedule in the environment:
# {"entry name": [seconds, "missed policy"]}; every entry records its ticks into BEAT_TEST_FILE.
if os.environ.get("BEAT_TEST_SCHEDULE"):
    app.conf.beat_schedule = {
        name: {"task": "tasks_app.record_tick", "schedule": float(every), "args": (os.environ["BEAT_TEST_FILE"],),
               "missed": missed}
        for name, (every, missed) in json.loads(os.environ["BEAT_TEST_SCHEDULE"]).items()}
    app.conf.beat_lease_timeout = float(os.environ.get("BEAT_TEST_LEASE", "2"))
    if os.environ.get("BEAT_TEST_MISSED_AFTER"):
        app.conf.beat_missed_after = float(os.environ["BEAT_TEST_MISSED_AFTER"])


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(bind=True)
def record_tick(self: Task, path: str) -> None:
    """What beat sent: one JSON line per execution (task id, entry, tick instant, start time)."""
    headers = self.request.headers or {}
    line = json.dumps({"id": self.request.id, "entry": headers.get("periodic_task_name"),
                       "tick": headers.get("periodic_tick"), "at": time.time()})
    with open(path, "a") as f:
        f.write(line + "\n")


@app.task
def rejects() -> None:
    """Refuses its message for good (task-rejected; the message goes to the dead letters)."""
    from celeriac.exceptions import Reject
    raise Reject("not for us", requeue=False)


@app.task
def mul(x: int, y: int) -> int:
    return x * y


@app.task
def record(path: str, value: str) -> str:
    """Append a line to a file: counts executions across processes."""
    with open(path, "a") as f:
        f.write(f"{value} {time.time()} {os.getpid()}\n")
    return value


@app.task
def run_until_released(path: str, value: str, release: str, most: float = 60.0) -> str:
    """Runs (recording its start and end) until the file `release` exists: the test, not a
    guess of how slow the machine is, decides how long it runs."""
    with open(path, "a") as f:
        f.write(f"start {value} {os.getpid()}\n")
    deadline = time.monotonic() + most
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.02)
    with open(path, "a") as f:
        f.write(f"end {value} {os.getpid()}\n")
    return value


@app.task
def sleep_then_record(path: str, value: str, seconds: float) -> str:
    with open(path, "a") as f:
        f.write(f"start {value} {os.getpid()}\n")
    time.sleep(seconds)
    with open(path, "a") as f:
        f.write(f"end {value} {os.getpid()}\n")
    return value


@app.task
def fail(message: str = "boom") -> None:
    raise ValueError(message)


class CustomError(Exception):
    pass


@app.task
def fail_custom() -> None:
    raise CustomError("custom", 42)


@app.task
def kill_self() -> None:
    os.kill(os.getpid(), 9)


@app.task
def unserializable() -> Any:
    return object()


@app.task(bind=True, max_retries=3, default_retry_delay=0.1)
def flaky(self: Task[Any, Any], marker: str, succeed_on: int) -> int:
    with open(marker, "a") as f:
        f.write(f"{self.request.retries}\n")
    if self.request.retries < succeed_on:
        # 0.3 s = three 100 ms units: on RabbitMQ each retry passes two delay queues (issue 20)
        raise self.retry(exc=OSError(f"attempt {self.request.retries}"), countdown=0.3)
    return self.request.retries


@app.task(bind=True, max_retries=2)
def always_retry(self: Task[Any, Any]) -> None:
    raise self.retry(countdown=0.05)


@app.task(autoretry_for=(OSError,), retry_backoff=0.05, retry_backoff_max=0.2, retry_jitter=False,
          retry_kwargs={"max_retries": 2})
def auto_flaky(marker: str) -> None:
    with open(marker, "a") as f:
        f.write("x\n")
    raise OSError("still broken")


def log_retry(request: Any, exc: BaseException | None = None) -> None:
    with open(request.kwargs["marker"] + ".handler", "a") as f:
        f.write(f"{request.retries} {type(exc).__name__}\n")


@app.task(bind=True)
@retry(max_retries=3, countdown=[0.05, 0.1, 0.15], on_retry=log_retry)
def decorated_retry(self: Task[Any, Any], marker: str, succeed_on: int) -> int:
    with open(marker, "a") as f:
        f.write(f"{self.request.retries} {time.time()}\n")
    if self.request.retries < succeed_on:
        raise ConnectionError("not yet")
    return self.request.retries


@app.task(track_started=True)
def slow(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


@app.task
async def async_sleep(seconds: float, value: int) -> int:
    await asyncio.sleep(seconds)
    return value


@app.task(bind=True)
def progress(self: Task[Any, Any], marker: str) -> str:
    Path(marker).write_text("in progress")  # before PROGRESS is visible: the client answers "go" to it
    self.update_state(state="PROGRESS", meta={"done": 1, "total": 2})
    deadline = time.time() + 20
    while Path(marker).read_text() != "go" and time.time() < deadline:
        time.sleep(0.02)
    return "finished"


@app.task(ignore_result=True)
def fire_and_forget(path: str) -> None:
    Path(path).write_text("ran")


@app.task(queue="special")
def routed() -> str:
    return "special"


class Tracked(Task[Any, Any]):
    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        Path(kwargs["marker"]).write_text(f"{type(exc).__name__}|{task_id}|{'ValueError' in str(einfo)}")

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        Path(kwargs["marker"]).write_text(f"success|{retval}")


@app.task(base=Tracked)
def handled(marker: str, ok: bool) -> str:
    if not ok:
        raise ValueError("handled failure")
    return "fine"


@app.task
def work(path: str, value: int, seconds: float = 0.01) -> int:
    """A short unit of work that leaves a trace line per execution."""
    time.sleep(seconds)
    with open(path, "a") as f:
        f.write(f"{value}\n")
    return value


# --- canvas ---

@app.task
def tsum(numbers: list[int]) -> int:
    return sum(numbers)


@app.task
def record_body(numbers: list[int], path: str) -> int:
    """A chord body that leaves one line per execution: proves it ran exactly once."""
    with open(path, "a") as f:
        f.write(f"body {len(numbers)} {sum(numbers)} {os.getpid()}\n")
    return sum(numbers)


@app.task
def record_error(request: Any, exc: BaseException, traceback: Any, path: str) -> None:
    """A new-style errback (request, exc, traceback): runs in the worker that saw the failure."""
    with open(path, "a") as f:
        f.write(f"{request.id} {type(exc).__name__} {exc}\n")


@app.task
def record_failed_id(task_id: str, path: str) -> None:
    """An old-style errback: it is sent with the failed task's id."""
    with open(path, "a") as f:
        f.write(f"{task_id}\n")


@app.task(bind=True)
def replaced(self: Task[Any, Any], x: int) -> None:
    from celeriac import chain as chain_
    self.replace(chain_(add.s(x, 1), mul.s(10)))


@app.task
def spawn_group(n: int) -> int:
    """Builds and launches a workflow from inside a running task."""
    from celeriac import group as group_
    group_(add.s(i, i) for i in range(n)).apply_async()
    return n


# --- time limits ---

@app.task
def spin() -> None:
    """An endless pure-Python loop: only a hard time limit ends it."""
    while True:
        pass


@app.task
def sleepy(seconds: float) -> str:
    time.sleep(seconds)
    return "woke up"


@app.task
def cleans_up(path: str) -> str:
    """Catches the soft limit and cleans up: the task's own answer stands."""
    from celeriac.exceptions import SoftTimeLimitExceeded
    try:
        time.sleep(60)
    except SoftTimeLimitExceeded:
        Path(path).write_text("cleaned")
        return "cleaned up"
    return "slept"


@app.task
async def async_sleepy(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "woke up"


@app.task
def spin_marked(path: str) -> None:
    """Says it started, then loops forever in pure Python."""
    Path(path).write_text("started")
    while True:
        pass


# --- rate limits ---

@app.task(rate_limit="20/s", rate_limit_scope="global", bind=True)
def limited_global(self: Any, i: int) -> tuple[float, str | None]:
    """When it started, and the slot it was deferred to (None: it ran at once)."""
    return time.time(), self.request.eta


@app.task(rate_limit="20/s")
def limited_per_worker(i: int) -> float:
    return time.time()


# --- messages that pass the broker's delay again (retries, rate-limit deferrals) ---

@app.task(bind=True, max_retries=10)
def retry_with_countdown(self: Task[Any, Any], marker: str, times: int, countdown: float) -> int:
    """Writes "<attempt> <time>" per run and retries `times` times, each after `countdown`."""
    with open(marker, "a") as f:
        f.write(f"{self.request.retries} {time.time()}\n")
    if self.request.retries < times:
        raise self.retry(countdown=countdown)
    return self.request.retries


@app.task(bind=True, max_retries=10, rate_limit="5/s")
def limited_retry(self: Task[Any, Any], marker: str, times: int) -> int:
    """Rate-limited and retried: every retry is a new message that must be limited again."""
    with open(marker, "a") as f:
        f.write(f"{self.request.retries} {time.time()}\n")
    if self.request.retries < times:
        raise self.retry(countdown=0.3)
    return self.request.retries


@app.task(unique_for=60)
def unique_work(marker: str, seconds: float) -> int:
    """Unique by its arguments: appends a line per run, then sleeps."""
    with open(marker, "a") as f:
        f.write("run\n")
    time.sleep(seconds)
    return sum(1 for _ in open(marker))


@app.task(bind=True, unique_for=60, max_retries=3)
def unique_retry_once(self: Task[Any, Any], marker: str) -> str:
    with open(marker, "a") as f:
        f.write(f"{self.request.retries}\n")
    if self.request.retries == 0:
        raise self.retry(countdown=1.0)
    return "done"


@app.task(unique_for=60, unique_key=lambda args, kwargs: str(kwargs.get("account")))
def unique_by_account(account: str, amount: int) -> int:
    return amount


@app.task(unique_for=60)
def unique_fail() -> None:
    raise ValueError("unique and failing")


@app.task(lock=True, lock_timeout=60)
def locked_section(marker: str, i: int) -> int:
    """Never two at once: writes when it starts and ends."""
    with open(marker, "a") as f:
        f.write(f"start {i} {time.time()}\n")
    time.sleep(0.3)
    with open(marker, "a") as f:
        f.write(f"end {i} {time.time()}\n")
    return i


@app.task(bind=True, lock=lambda args, kwargs: f"account-{args[1]}", lock_timeout=60, max_retries=2)
def locked_retry_once(self: Task[Any, Any], marker: str, account: str) -> str:
    with open(marker, "a") as f:
        f.write(f"run {self.request.retries} {time.time()}\n")
    if self.request.retries == 0:
        raise self.retry(countdown=0.2)  # the lock is let go of between the attempts
    return account


@app.task
def delay_child(marker: str, countdown: float) -> str:
    """Run with a countdown itself, it sends another task with a countdown."""
    return str(retry_with_countdown.apply_async((marker, 0, 0.0), countdown=countdown).id)


# --- pool process recycling ---

_HOARD: list[bytes] = []


@app.task
def whoami(path: str, i: int) -> int:
    with open(path, "a") as f:
        f.write(f"{i}\n")
    return os.getpid()


@app.task
def hog(megabytes: int) -> int:
    """Keeps memory in this pool process: only replacing the process gives it back."""
    _HOARD.append(b"x" * (megabytes * 1024 * 1024))  # written, so resident (calloc pages would not be)
    return os.getpid()


# --- RabbitMQ quorum queues (tests/integration/test_rabbitmq_quorum.py) ---
if os.environ.get("QUORUM_TEST"):
    app.conf.task_default_queue_type = "quorum"
    app.conf.task_max_deliveries = 3
