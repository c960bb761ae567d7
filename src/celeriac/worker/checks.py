"""The steps a message passes before its task runs, in order.

Each step looks at the job (job.py), fills in what it learned, and returns an ending
(outcomes.py) when the message stops there, or None to go on: first the decoding steps
(the message, its delivery count, its task, its arguments), then the checks (a duplicate
chord body, revoked, expired, following a pending unique call, over its rate limit,
locked out). A message that passes them
all runs; whichever way it goes, `Consumer.finish` writes the result.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable

from .. import protocol, signals, states
from ..exceptions import ContentDisallowed, DecodeError
from ..brokers import Outgoing
from ..unique import FOLLOW_HEADER
from . import following, workflow
from .job import Job, request_for
from .locks import defer_if_locked
from .outcomes import (BadBody, Deferred, Discarded, DuplicateChordBody, Ending, Poison, Ran, Undecodable,
                       Unregistered)
from .ratelimit import defer_if_limited

if TYPE_CHECKING:
    from .consumer import Consumer

logger = logging.getLogger("celeriac.worker")

Step = Callable[["Consumer", Job], "Ending | None"]


def decode_message(c: "Consumer", job: Job) -> Ending | None:
    try:
        job.msg = msg = protocol.unpack(job.delivery.payload)
    except DecodeError as exc:
        return Undecodable(exc)
    job.task_id, job.name = str(msg.headers["id"]), str(msg.headers["task"])
    return None


def delivered_too_often(c: "Consumer", job: Job) -> Ending | None:
    count = job.delivery.deliveries
    if c.max_deliveries and count > c.max_deliveries:
        return Poison(f"delivered {count} times without finishing (task_max_deliveries={c.max_deliveries}): "
                      "it probably kills its worker process")
    return None


def find_task(c: "Consumer", job: Job) -> Ending | None:
    job.task = c.app.tasks.get(job.name)
    return Unregistered() if job.task is None else None


def decode_arguments(c: "Consumer", job: Job) -> Ending | None:
    assert job.msg is not None
    try:
        args, kwargs, embed = protocol.decode_body(job.msg, c.accept)
    except (DecodeError, ContentDisallowed) as exc:
        return BadBody(exc)
    job.request = request_for(job.msg, job.delivery, args, kwargs, embed, c.hostname)
    return None


def received(c: "Consumer", job: Job) -> Ending | None:
    """Not a check: the message is a task the worker can run, and says so (signal, event)."""
    msg, request = job.msg, job.request
    assert msg is not None and request is not None
    if signals.task_received.receivers:
        signals.task_received.send(sender=c, request=request)
    request.received_at = time.time()
    request.body = msg.body if msg.content_type == protocol.JSON else None  # the history keeps it as sent
    if c.events is not None:
        headers = msg.headers
        c.events.send("task-received", uuid=job.task_id, name=job.name, args=headers.get("argsrepr"),
                      kwargs=headers.get("kwargsrepr"), root_id=headers.get("root_id"),
                      parent_id=headers.get("parent_id"), retries=headers.get("retries", 0),
                      eta=headers.get("eta"), expires=headers.get("expires"))
    return None


def duplicate_chord_body(c: "Consumer", job: Job) -> Ending | None:
    assert job.msg is not None
    if job.msg.headers.get(workflow.CHORD_BODY_HEADER):
        meta = c.app.backend.get(job.task_id)
        if meta is not None and meta.get("status") in states.READY_STATES:
            return DuplicateChordBody()
    return None


def revoked(c: "Consumer", job: Job) -> Ending | None:
    if c.remote is not None:
        c.remote.refresh()
    if c.revocations.is_revoked(job.task_id):
        return Discarded("was revoked", expired=False)
    assert job.request is not None
    if job.request.stamps and (stamp := c.revocations.revoked_stamp(job.request.stamps)):
        return Discarded(f"was revoked by its stamp {stamp}", expired=False)
    return None


def expired(c: "Consumer", job: Job) -> Ending | None:
    assert job.msg is not None
    expires = job.msg.headers.get("expires")
    if expires and (protocol.iso_to_epoch(expires) or 0) < time.time():
        return Discarded(f"expired at {expires}", expired=True)
    return None


def follows_pending_call(c: "Consumer", job: Job) -> Ending | None:
    """A canvas member whose unique call is pending as another task (following.py): deferred
    while that task is pending, then ended with its outcome - or run, holding the key."""
    assert job.msg is not None and job.request is not None
    if FOLLOW_HEADER not in job.msg.headers:
        return None
    followed = following.follow(c.app, job.msg, job.delivery, job.request)
    if isinstance(followed, Outgoing):
        return Deferred(followed)
    return Ran(followed) if followed is not None else None


def over_rate_limit(c: "Consumer", job: Job) -> Ending | None:
    """Over its rate limit: deferred to the start time it reserved."""
    assert job.task is not None and job.msg is not None
    if job.task.rate_limit is None and not c.default_rate_limit:
        return None
    deferred = defer_if_limited(c.app, job.task, job.msg, job.delivery, c.worker_id)
    return Deferred(deferred) if deferred is not None else None


def locked_out(c: "Consumer", job: Job) -> Ending | None:
    """Its lock held by another run: deferred briefly (or the lock is now this run's)."""
    assert job.task is not None and job.msg is not None and job.request is not None
    if not job.task.lock:
        return None
    deferred = defer_if_locked(c.app, job.task, job.msg, job.delivery, job.request)
    return Deferred(deferred) if deferred is not None else None


DECODE: tuple[Step, ...] = (decode_message, delivered_too_often, find_task, decode_arguments, received)
CHECKS: tuple[Step, ...] = (duplicate_chord_body, revoked, expired, follows_pending_call, over_rate_limit,
                             locked_out)
STEPS = DECODE + CHECKS


def run_steps(c: "Consumer", job: Job, steps: tuple[Step, ...] = STEPS) -> Ending | None:
    """The first ending a step returns, or None: the task is to run."""
    for step in steps:
        ending = step(c, job)
        if ending is not None:
            return ending
    return None
