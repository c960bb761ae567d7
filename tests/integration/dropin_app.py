"""Tasks of the drop-in tests (tests/integration/test_dropin_*.py): the tutorial's retry
examples as written, and receivers of Celery's signals that record what they were sent.

Workers import it with `-A dropin_app`. Receivers write one JSON line per signal to the
file named by DROPIN_SIGNALS (nothing when it is unset)."""

from __future__ import annotations

import time
from typing import Any

from celeriac import Celeriac
from celeriac.decorators import retry, task

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
