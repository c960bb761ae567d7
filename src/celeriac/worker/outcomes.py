"""Every way a message leaves the worker, as what it writes, sends and says.

A check (checks.py) that stops a message returns one of the endings here; a task that ran
ends in `Ran`, whose outcome state picks what to write (one table, `_BY_STATE`).
`Consumer.finish` applies any of them to the batch: results, follow-up publishes, chord
parts, dead letters and acks, with the task events and signals that go with them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .. import history, protocol, signals, states
from ..backends import StoredResult
from ..brokers import Outgoing
from ..exceptions import ContentDisallowed, DecodeError, NotRegistered, TaskRevokedError, WorkerLostError
from . import rejection, workflow
from .batch import Batch
from ..execution import Outcome, exception_info
from .job import UNIQUE_HEADER, Job, request_for

if TYPE_CHECKING:
    from ..task import Context, Task
    from .consumer import Consumer

logger = logging.getLogger("celeriac.worker")


class Ending:
    """How one message ends; `apply` writes it into the batch and tells whoever listens."""

    def apply(self, c: "Consumer", job: Job, batch: Batch) -> None:
        raise NotImplementedError


# --- ended by a check: the task did not run ---

@dataclass(slots=True)
class Undecodable(Ending):
    """Not a task message at all: kept in the dead-letter queue, nothing to record."""

    exc: DecodeError

    def apply(self, c: "Consumer", job: Job, batch: Batch) -> None:
        delivery = job.delivery
        logger.error("message %s on queue %r cannot be decoded and goes to the dead-letter queue: %s",
                     delivery.tag, delivery.queue, self.exc)
        batch.dead.append((delivery, f"cannot decode message: {self.exc}"))
        if signals.task_rejected.receivers:  # Celery's meaning: a message that is not a task
            signals.task_rejected.send(sender=c, message=delivery, exc=self.exc)


@dataclass(slots=True)
class Poison(Ending):
    """Delivered more than task_max_deliveries times: it keeps killing its pool process."""

    reason: str

    def apply(self, c: "Consumer", job: Job, batch: Batch) -> None:
        logger.error("task %s[%s] goes to the dead-letter queue: %s", job.name, job.task_id, self.reason)
        batch.dead.append((job.delivery, self.reason))
        lost = WorkerLostError(self.reason)
        record = store(c, batch, job.task_id, states.FAILURE, lost, name=job.name)
        if c.events is not None:
            c.events.send("task-failed", uuid=job.task_id, name=job.name, exception=repr(lost), traceback=None)
        _fail_undecoded(c, batch, job, lost, record)


class Unregistered(Ending):
    """A task name this worker does not know: FAILURE with NotRegistered, and the message acked."""

    def apply(self, c: "Consumer", job: Job, batch: Batch) -> None:
        if job.name not in c.unknown_logged:
            c.unknown_logged.add(job.name)
            logger.error("Received unregistered task of type %r (task id %s): the worker does not know it. "
                         "Is the module that defines it imported by the worker (-A / include=)? "
                         "The task is marked FAILURE with NotRegistered.", job.name, job.task_id)
        error = NotRegistered(job.name)
        record = store(c, batch, job.task_id, states.FAILURE, error, name=job.name)
        _fail_undecoded(c, batch, job, error, record)
        batch.acks.append(job.delivery)
        if signals.task_unknown.receivers:
            signals.task_unknown.send(sender=None, name=job.name, id=job.task_id, message=job.msg, exc=error)


@dataclass(slots=True)
class BadBody(Ending):
    """Its arguments cannot be decoded (or come in a content type not accepted)."""

    exc: Exception

    def apply(self, c: "Consumer", job: Job, batch: Batch) -> None:
        logger.error("task %s[%s]: body cannot be decoded, message goes to the dead-letter queue: %s",
                     job.name, job.task_id, self.exc)
        batch.dead.append((job.delivery, f"cannot decode body: {self.exc}"))
        store(c, batch, job.task_id, states.FAILURE, self.exc, name=job.name)


class DuplicateChordBody(Ending):
    """A second copy of a chord body: the header that fired it was re-run after a crash between
    publishing the body and its own ack. The body already ran; this copy must not."""

    def apply(self, c: "Consumer", job: Job, batch: Batch) -> None:
        assert job.msg is not None
        logger.warning("task %s[%s] is the body of chord %s and has already run; duplicate dropped",
                       job.name, job.task_id, job.msg.headers.get(workflow.CHORD_BODY_HEADER))
        batch.acks.append(job.delivery)


@dataclass(slots=True)
class Discarded(Ending):
    """Revoked or expired before it started: REVOKED, and its workflow told (as for a failure)."""

    why: str
    expired: bool

    def apply(self, c: "Consumer", job: Job, batch: Batch) -> None:
        task, request = job.task, job.request
        assert task is not None and request is not None
        logger.info("task %s[%s] %s and is discarded (state REVOKED)", task.name, request.id, self.why)
        error = TaskRevokedError(f"task {task.name}[{request.id}] {self.why}")
        record = store(c, batch, str(request.id), states.REVOKED, error, name=task.name, request=request)
        fail_workflow(c, batch, request, states.REVOKED, error, record)
        batch.acks.append(job.delivery)
        if c.events is not None:
            c.events.send("task-revoked", uuid=str(request.id), terminated=False, signum=None, expired=self.expired)
        if signals.task_revoked.receivers:
            signals.task_revoked.send(sender=task, request=request, terminated=False, signum=None,
                                      expired=self.expired)


@dataclass(slots=True)
class Deferred(Ending):
    """Over its rate limit or locked out: a copy goes back to the broker to run later (the wait
    never holds a pool slot), and this delivery is acked with it."""

    message: Outgoing

    def apply(self, c: "Consumer", job: Job, batch: Batch) -> None:
        batch.publishes.append(self.message)
        batch.acks.append(job.delivery)


# --- the task ran ---

@dataclass(slots=True)
class Ran(Ending):
    """The task ran and its outcome (execution.Outcome) says how it went."""

    outcome: Outcome
    runtime: float = 0.0

    def apply(self, c: "Consumer", job: Job, batch: Batch) -> None:
        task = job.task
        assert task is not None and job.request is not None
        c.count_processed(task.name)
        _BY_STATE[self.outcome.state](c, job, self, batch)
        if c.events is not None:
            c.slot.events_dropped = c.events.dropped


def _ignored_result(job: Job) -> bool:
    assert job.task is not None and job.request is not None
    return job.request.ignore_result or bool(job.task.ignore_result)


def _succeeded(c: "Consumer", job: Job, ran: Ran, batch: Batch) -> None:
    task, request, retval = job.task, job.request, ran.outcome.retval
    assert task is not None and request is not None
    if c.events is not None:
        c.events.send("task-succeeded", uuid=job.task_id, result=protocol._saferepr(retval, 256), runtime=ran.runtime)
    if logger.isEnabledFor(logging.INFO):
        logger.info("Task %s[%s] succeeded in %.6fs: %s", task.name, job.task_id, ran.runtime,
                    protocol._saferepr(retval, 256))
    flows = workflow.in_workflow(request)
    if flows:
        workflow.after_success(c.app, request, retval, batch.publishes, storer(c, batch), batch.chord_parts)
    record = None if _ignored_result(job) else store(c, batch, job.task_id, states.SUCCESS, retval,
                                                     request=request, task=task)
    if flows:
        _chord_part(c, batch, request, record, states.SUCCESS, retval, None)
    batch.acks.append(job.delivery)


def _failed(c: "Consumer", job: Job, ran: Ran, batch: Batch) -> None:
    """FAILURE, or REVOKED by revoke(terminate=True) while it ran."""
    task, request, outcome = job.task, job.request, ran.outcome
    assert task is not None and request is not None and outcome.exc is not None and outcome.einfo is not None
    exc, traceback = outcome.exc, outcome.einfo.traceback
    if outcome.state == states.REVOKED:
        if c.events is not None:
            c.events.send("task-revoked", uuid=job.task_id, terminated=True, signum=getattr(exc, "signum", None),
                          expired=False)
        logger.warning("Task %s[%s] was terminated (revoked): %s", task.name, job.task_id, exc)
    else:
        if c.events is not None:
            c.events.send("task-failed", uuid=job.task_id, exception=repr(exc), traceback=traceback,
                          runtime=ran.runtime)
        if task.throws and isinstance(exc, tuple(task.throws)):
            logger.info("Task %s[%s] raised expected: %r", task.name, job.task_id, exc)
        else:
            logger.error("Task %s[%s] raised unexpected: %r\n%s", task.name, job.task_id, exc, traceback.rstrip())
    record = None
    if not _ignored_result(job) or task.store_errors_even_if_ignored:
        record = store(c, batch, job.task_id, outcome.state, exc, request=request, task=task, traceback=traceback)
    if workflow.in_workflow(request):
        workflow.after_failure(c.app, request, outcome.state, exc, traceback, batch.publishes, storer(c, batch),
                               batch.chord_parts)
        _chord_part(c, batch, request, record, outcome.state, exc, traceback)
    batch.acks.append(job.delivery)


def _retried(c: "Consumer", job: Job, ran: Ran, batch: Batch) -> None:
    task, request, outcome = job.task, job.request, ran.outcome
    assert task is not None and request is not None
    assert outcome.retry is not None and outcome.einfo is not None
    if c.events is not None:
        c.events.send("task-retried", uuid=job.task_id, exception=repr(outcome.exc),
                      traceback=outcome.einfo.traceback)
    logger.info("Task %s[%s] retry: %s", task.name, job.task_id, outcome.retry)
    if not getattr(outcome.retry, "sent", False):
        batch.publishes.append(c.app.retry_message(task, request, outcome.retry))
    if not _ignored_result(job):
        store(c, batch, job.task_id, states.RETRY, outcome.exc, request=request, task=task,
              traceback=outcome.einfo.traceback)
    batch.acks.append(job.delivery)


def _ignored(c: "Consumer", job: Job, ran: Ran, batch: Batch) -> None:
    """Ignore raised by the task, or Task.replace(): the replacement goes out with this ack."""
    assert job.request is not None
    if job.request.replaced_by:
        batch.publishes.extend(job.request.replaced_by)
    batch.acks.append(job.delivery)


def _rejected(c: "Consumer", job: Job, ran: Ran, batch: Batch) -> None:
    reject = ran.outcome.exc
    assert reject is not None
    requeue = bool(getattr(reject, "requeue", False))
    if c.events is not None:
        if not requeue:  # it ends FAILURE: task-failed, then task-rejected (Celery's order)
            c.events.send("task-failed", uuid=job.task_id, exception=repr(reject), traceback=None,
                          runtime=ran.runtime)
        c.events.send("task-rejected", uuid=job.task_id, requeue=requeue)
    if requeue:
        _rejected_requeue(job, reject, batch)
    else:
        _rejected_for_good(c, job, reject, batch)


def _rejected_requeue(job: Job, reject: BaseException, batch: Batch) -> None:
    """Reject(requeue=True): a copy marked redelivered goes back (to any worker) and this
    delivery is acked, so the broker's crash count stays untouched."""
    assert job.task is not None
    logger.warning("Task %s[%s] rejected its message with requeue=True; it will be delivered again",
                   job.task.name, job.task_id)
    batch.publishes.append(rejection.redelivered_copy(job.delivery))
    batch.acks.append(job.delivery)
    if signals.task_rejected.receivers:
        signals.task_rejected.send(sender=job.task, message=job.delivery, exc=reject)


def _rejected_for_good(c: "Consumer", job: Job, reject: BaseException, batch: Batch) -> None:
    """Reject(requeue=False): FAILURE with the Reject as its result (task_failure and errbacks as
    for any failure, as in Celery); the message is kept in the dead-letter queue with the reason."""
    task, request = job.task, job.request
    assert task is not None and request is not None
    reason = getattr(reject, "reason", None)
    logger.error("Task %s[%s] rejected its message (requeue=False): %s; state FAILURE, message kept in the "
                 "dead-letter queue", task.name, request.id, reason)
    batch.dead.append((job.delivery, f"rejected by the task: {reason if reason is not None else reject}"))
    einfo = exception_info(reject)
    record = None
    if not _ignored_result(job) or task.store_errors_even_if_ignored:
        record = store(c, batch, job.task_id, states.FAILURE, reject, request=request, task=task,
                       traceback=einfo.traceback)
    if signals.task_failure.receivers:
        signals.task_failure.send(sender=task, task_id=request.id, exception=reject, args=request.args,
                                  kwargs=request.kwargs, traceback=einfo.tb, einfo=einfo)
    if signals.task_rejected.receivers:
        signals.task_rejected.send(sender=task, message=job.delivery, exc=reject)
    if workflow.in_workflow(request):
        workflow.after_failure(c.app, request, states.FAILURE, reject, einfo.traceback, batch.publishes,
                               storer(c, batch), batch.chord_parts)
        _chord_part(c, batch, request, record, states.FAILURE, reject, einfo.traceback)


# What the worker writes for each state a run can end in: the one place that tells them apart.
_BY_STATE: dict[str, Callable[["Consumer", Job, Ran, Batch], None]] = {
    states.SUCCESS: _succeeded, states.FAILURE: _failed, states.REVOKED: _failed, states.RETRY: _retried,
    states.IGNORED: _ignored, states.REJECTED: _rejected}


# --- what the endings write ---

def store(c: "Consumer", batch: Batch, task_id: str, status: str, result: Any, *, name: str | None = None,
          request: "Context | None" = None, task: "Task[Any, Any] | None" = None,
          traceback: str | None = None) -> StoredResult:
    """A result into the batch (with its history record); a value that cannot be encoded is
    stored as that failure, so get() does not hang."""
    name = name or (task.name if task else None)
    record = workflow.encode_outcome(c.app, task_id, status, result, name=name, request=request,
                                     traceback=traceback, hostname=c.hostname)
    if c.history:
        record.history = history.record_for(task_id, record.status, name, record.data, request, c.hostname)
    batch.results.append(record)
    if request is not None and request.id == task_id:
        _let_go(batch, request, task_id, status)
    batch.mark()
    return record


def _let_go(batch: Batch, request: "Context", task_id: str, status: str) -> None:
    """A run that ended lets go of its lock; a task that is done, of its unique key."""
    if request.lock_key and (status in states.READY_STATES or status == states.RETRY):
        batch.unique_done.append((request.lock_key, task_id))
    key = request.headers.get(UNIQUE_HEADER) if request.headers else None
    if key and status in states.READY_STATES:  # the same call may be sent again
        batch.unique_done.append((str(key), task_id))


def storer(c: "Consumer", batch: Batch) -> workflow.StoreFn:
    def store_one(task_id: str, state: str, value: Any, traceback: str | None, name: str | None) -> None:
        store(c, batch, task_id, state, value, name=name, traceback=traceback)
    return store_one


def _chord_part(c: "Consumer", batch: Batch, request: "Context", record: StoredResult | None, state: str,
                value: Any, traceback: str | None) -> None:
    part = workflow.chord_part(c.app, request, record, state, value, traceback, c.hostname)
    if part is not None:
        batch.chord_parts.append(part)


def fail_workflow(c: "Consumer", batch: Batch, request: "Context", state: str, exc: BaseException,
                  record: StoredResult | None) -> None:
    """A task that ends without running (expired, unregistered, poison): its workflow goes on
    as if it failed, so nothing downstream waits forever."""
    if not workflow.in_workflow(request):
        return
    workflow.after_failure(c.app, request, state, exc, None, batch.publishes, storer(c, batch), batch.chord_parts)
    _chord_part(c, batch, request, record, state, exc, None)


def _fail_undecoded(c: "Consumer", batch: Batch, job: Job, error: BaseException, record: StoredResult) -> None:
    """The workflow of a message stopped before its body was decoded, if the body can be."""
    assert job.msg is not None
    try:
        args, kwargs, embed = protocol.decode_body(job.msg, c.accept)
    except (DecodeError, ContentDisallowed):
        return
    request = request_for(job.msg, job.delivery, args, kwargs, embed, c.hostname)
    fail_workflow(c, batch, request, states.FAILURE, error, record)
