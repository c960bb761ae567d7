"""Tasks of the drop-in tests (tests/integration/test_dropin_*.py): the tutorial's retry
examples as written, and receivers of Celery's signals that record what they were sent.

Workers import it with `-A dropin_app`. Receivers write one JSON line per signal to the
file named by DROPIN_SIGNALS (nothing when it is unset)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from celeriac import Celeriac, signals
from celeriac.decorators import retry, task
from celeriac.exceptions import Reject

app = Celeriac("dropin_app")
app.conf.worker_heartbeat_interval = 0.5
app.conf.worker_lease_timeout = 3.0


def _attempt(request: Any, marker: str, succeed_on: int) -> int:
    """One attempt of a tutorial task: note when it ran; fail until attempt `succeed_on`."""
    with open(marker, "a") as f:
        f.write(f"{request.retries} {time.time()}\n")
    if request.retries < succeed_on:
        raise ConnectionError(f"attempt {request.retries} failed")
    return int(request.retries)


def log_retry(request: Any, exc: BaseException | None = None) -> None:
    with open(request.args[0] + ".handler", "a") as f:
        f.write(f"{request.retries} {type(exc).__name__}\n")


# --- the tutorial's three retry examples, as written (short delays) ---

@app.task(bind=True)
@retry(max_retries=3, countdown=0.3)
def constant_countdown(self: Any, arg1: str, arg2: int) -> int:
    try:
        return _attempt(self.request, arg1, arg2)
    except Exception as exc:
        raise self.retry(exc=exc)  # noqa: B904 - the tutorial's form, verbatim


@app.task(bind=True)
@retry(max_retries=3, countdown=[0.2, 0.5, 0.9])
def listed_countdown(self: Any, arg1: str, arg2: int) -> int:
    try:
        return _attempt(self.request, arg1, arg2)
    except Exception as exc:
        raise self.retry(exc=exc)  # noqa: B904 - the tutorial's form, verbatim


@app.task(bind=True)
@retry(max_retries=3, countdown=[0.2, 0.5, 0.9], on_retry=log_retry)
def with_handler(self: Any, arg1: str, arg2: int) -> int:
    try:
        return _attempt(self.request, arg1, arg2)
    except Exception as exc:
        raise self.retry(exc=exc)  # noqa: B904 - the tutorial's form, verbatim


@task(bind=True)  # celeriac.decorators.task: the tutorial's other import
@retry(max_retries=2, countdown=[0.2, 0.6], on_retry=log_retry)
def under_plain_task(self: Any, arg1: str, arg2: int) -> int:
    try:
        return _attempt(self.request, arg1, arg2)
    except Exception as exc:
        raise self.retry(exc=exc)  # noqa: B904 - the tutorial's form, verbatim


# --- signals: every receiver records the keyword arguments it was sent ---

def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return type(value).__name__


def _describe(name: str, value: Any) -> Any:
    if name == "request":  # a task's request: the fields receivers use
        return {"id": value.id, "task": value.task, "name": value.name, "args": _plain(list(value.args or ()))}
    if name in ("task", "sender") and hasattr(value, "name") and hasattr(value, "apply_async"):
        return f"task:{value.name}"
    if name == "logger":
        return f"logger:{value.name}"
    if name in ("conf", "options") and hasattr(value, "get"):
        return {"default_queue": value.get("task_default_queue"), "has_concurrency": "concurrency" in value}
    return _plain(value)


def _record(signal: Any, sender: Any = None, **kwargs: Any) -> None:
    path = os.environ.get("DROPIN_SIGNALS")
    if not path:
        return
    line = {"signal": signal.name, "pid": os.getpid(), "sender": _describe("sender", sender),
            "kwargs": {k: _describe(k, v) for k, v in kwargs.items()}}
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")


WORKER_SIGNALS = [
    "before_task_publish", "after_task_publish", "task_received", "task_prerun", "task_postrun", "task_success",
    "task_failure", "task_retry", "task_revoked", "task_rejected", "task_unknown", "task_internal_error",
    "celeryd_init", "celeryd_after_setup", "worker_init", "worker_before_create_process", "worker_process_init",
    "worker_ready", "heartbeat_sent", "worker_shutting_down", "worker_process_shutdown", "worker_shutdown",
    "import_modules", "after_setup_logger", "after_setup_task_logger", "beat_init", "beat_embedded_init",
]
for _name in WORKER_SIGNALS:
    getattr(signals, _name).connect(_record, dispatch_uid=f"dropin-{_name}")
    getattr(signals, _name).connect(_record, dispatch_uid=f"dropin-{_name}")  # connected once: dispatch_uid

if os.environ.get("DROPIN_OWN_LOGGING"):  # the project configures logging itself, as Django projects do
    @signals.setup_logging.connect
    def own_logging(signal: Any = None, sender: Any = None, **kwargs: Any) -> None:
        _record(signal, sender, **kwargs)
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="OWN %(levelname)s %(message)s",
                            force=True)


@app.task
def plus(x: int, y: int) -> int:
    return x + y


@app.task
def broken() -> None:
    raise KeyError("broken on purpose")


@app.task(bind=True, max_retries=1)
def retry_once(self: Any) -> str:
    if self.request.retries == 0:
        raise self.retry(exc=OSError("once"), countdown=0.1)
    return "retried"


@app.task
def refuse() -> None:
    raise Reject("not for us", requeue=False)


@app.task
def unstorable() -> Any:
    return object()


@app.task
def spawn() -> str:
    return str(plus.delay(1, 1).id)


# --- result_extended, pydantic=True, AbortableTask, allow_join_result, throws ---

app.conf.result_extended = True

try:
    from pydantic import BaseModel
except ImportError:  # pragma: no cover - pydantic is in the test extra
    BaseModel = object  # type: ignore[assignment,misc]


class Order(BaseModel):
    id: int
    amount: float


class Receipt(BaseModel):
    order_id: int
    total: float


@app.task(pydantic=True)
def charge(order: Order, coupon: Order | None = None, note: str = "") -> Receipt:
    assert isinstance(order, Order), type(order)  # converted from the dict the client sent
    discount = coupon.amount if coupon is not None else 0.0
    return Receipt(order_id=order.id, total=order.amount - discount)


@app.task(pydantic=True)
async def charge_async(order: Order) -> Receipt:
    return Receipt(order_id=order.id, total=order.amount)


from celeriac.contrib.abortable import AbortableTask  # noqa: E402


@app.task(bind=True, base=AbortableTask)
def abortable_loop(self: Any, marker: str) -> str:
    with open(marker, "a") as f:
        f.write("started\n")
    deadline = time.time() + 20
    while time.time() < deadline:
        if self.is_aborted():
            return "aborted"
        time.sleep(0.05)
    return "ran to the end"


@app.task
def joins() -> int:
    from celeriac.result import allow_join_result
    with allow_join_result():
        # On its own queue (another worker's): a prefetching broker (RabbitMQ) may hand the
        # child to this very process, which waits here - the deadlock Celery's docs warn about.
        return int(plus.apply_async((20, 22), queue="side").get(timeout=15))


@app.task
def spawn_detached() -> str:
    return str(plus.apply_async((1, 1), add_to_parent=False).id)


@app.task(throws=(KeyError,))
def expected_failure() -> None:
    raise KeyError("expected on purpose")
