"""Canvas members that follow a pending unique call (celeriac.unique.member_headers).

A follower is never run while the task holding its key is pending: it goes back to the
broker with a growing delay (the wait happens there, never in a pool slot) and, once the
holder has finished, takes the holder's outcome as its own, so the chain or chord around it
goes on with the one run's result. If the key is free but the holder left no final result
(it ignores results, or its hold expired), the follower waits once more - results are
written just after keys are let go of - and then runs itself, holding the key.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .. import protocol, states
from ..brokers import Delivery, Outgoing
from ..exceptions import TaskRevokedError
from ..unique import FOLLOW_HEADER, UNIQUE_HEADER
from ..execution import Outcome

if TYPE_CHECKING:
    from ..app import Celeriac
    from ..task import Context

logger = logging.getLogger("celeriac.worker")

CHECKS_HEADER = "celeriac_follow_checks"  # how often the follower has been deferred
FIRST_DELAY, LONGEST_DELAY = 0.25, 5.0
_FOLLOWING = (FOLLOW_HEADER, CHECKS_HEADER, "celeriac_follow_claimed")
_FINAL = (states.SUCCESS, states.FAILURE, states.REVOKED)


def follow(app: "Celeriac", msg: protocol.TaskMessage, delivery: Delivery,
           request: "Context") -> Outgoing | Outcome | None:
    """For a follower: the message to publish instead of running (still pending), the
    holder's outcome to finish with, or None to run it (and then it holds the key)."""
    holder, key, seconds = msg.headers[FOLLOW_HEADER]
    outcome = holder_outcome(app, str(holder))
    if outcome is not None:
        logger.info("task %s[%s] is the same call as %s (unique key %s): it takes that task's outcome, %s",
                    request.task, request.id, holder, key, outcome.state)
        return outcome
    task_id = str(request.id)
    now_holder = app.backend.claim_unique(str(key), task_id, float(seconds))
    checks = int(msg.headers.get(CHECKS_HEADER) or 0)
    if now_holder == task_id and msg.headers.get("celeriac_follow_claimed"):
        logger.info("task %s[%s]: %s left no final result and its unique key %s is free; it runs itself",
                    request.task, request.id, holder, key)
        # From here on it is the unique call itself (its retries too): it no longer follows.
        kept = {k: v for k, v in (request.headers or {}).items() if k not in _FOLLOWING}
        request.headers = {**kept, UNIQUE_HEADER: key}
        return None
    extra = {"celeriac_follow_claimed": True} if now_holder == task_id else {}
    return _deferred(msg, delivery, [now_holder if now_holder != task_id else holder, key, seconds], checks, extra)


def holder_outcome(app: "Celeriac", holder: str) -> Outcome | None:
    meta = app.backend.get(holder)
    if meta is None or meta.get("status") not in _FINAL:
        return None
    if meta["status"] == states.SUCCESS:
        return Outcome(states.SUCCESS, retval=meta.get("result"))
    value = meta.get("result")
    if isinstance(value, dict) or meta["status"] != states.REVOKED:
        exc = protocol.exception_from_dict(value)
    else:
        exc = TaskRevokedError(f"task {holder} was revoked")
    text = str(meta.get("traceback") or f"{type(exc).__name__}: {exc}\n")
    return Outcome(str(meta["status"]), exc=exc, einfo=protocol.ExceptionInfo(exc, type(exc), text))


def _deferred(msg: protocol.TaskMessage, delivery: Delivery, follows: list[Any], checks: int,
              extra: dict[str, Any]) -> Outgoing:
    delay = min(FIRST_DELAY * 2 ** checks, LONGEST_DELAY)
    eta = time.time() + delay
    headers = {**msg.headers, **extra, FOLLOW_HEADER: follows, CHECKS_HEADER: checks + 1,
               "eta": protocol.to_iso(datetime.fromtimestamp(eta, UTC))}
    copy = protocol.TaskMessage(headers, msg.properties, msg.body, msg.content_type, msg.content_encoding)
    return Outgoing(delivery.queue, protocol.pack(copy), delivery.priority, eta)
