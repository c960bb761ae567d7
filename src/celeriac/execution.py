"""Running one task: handlers, signals, retry and autoretry. Shared by the worker and `apply()`
(client side: eager calls), so it lives outside worker/."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import traceback as tb_module
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from . import signals, states
from .exceptions import (Ignore, Reject, Replaced, Retry, SoftTimeLimitExceeded, TaskRevokedError,
                          TimeLimitExceeded)
from .protocol import ExceptionInfo
from .task import Context, Task, _current

if TYPE_CHECKING:
    from .result import EagerResult

logger = logging.getLogger("celeriac.worker")
_HOSTNAME = socket.gethostname()


class Limiter(Protocol):
    """Time limits around a run (the worker's, worker/limits.py); eager calls run without."""

    def start(self, soft: float | None, hard: float | None) -> None: ...

    def stop(self) -> None: ...


@dataclass(slots=True)
class Outcome:
    state: str
    retval: Any = None
    exc: BaseException | None = None
    einfo: ExceptionInfo | None = None
    retry: Retry | None = None


_OWN_FILES = tuple(os.path.join(os.path.dirname(__file__), name) for name in ("execution.py", "task.py"))


def exception_info(exc: BaseException) -> ExceptionInfo:
    """The traceback as the user wants it: starting at their task, not at celeriac's caller."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename in _OWN_FILES:
        tb = tb.tb_next
    text = "".join(tb_module.format_exception(type(exc), exc, tb))
    return ExceptionInfo(exc, type(exc), text, tb)


def _before(task: Task[Any, Any], request: Context, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    request.date_started = request.date_started or datetime.now(UTC).isoformat()
    if signals.task_prerun.receivers:
        signals.task_prerun.send(sender=task, task_id=request.id, task=task, args=args, kwargs=kwargs)
    task.before_start(str(request.id), args, kwargs)


def _classify(task: Task[Any, Any], request: Context, exc: BaseException) -> Outcome:
    if isinstance(exc, Retry):
        cause = exc.exc if exc.exc is not None else exc
        return Outcome(states.RETRY, exc=cause, einfo=exception_info(cause), retry=exc)
    if isinstance(exc, Ignore):
        return Outcome(states.IGNORED, exc=exc)
    if isinstance(exc, TaskRevokedError):  # revoke(terminate=True) ended it
        return Outcome(states.REVOKED, exc=exc, einfo=exception_info(exc))
    if isinstance(exc, Reject):
        return Outcome(states.REJECTED, exc=exc)
    if task.autoretry_for and isinstance(exc, task.autoretry_for) and not (
            task.dont_autoretry_for and isinstance(exc, task.dont_autoretry_for)):
        options = dict(task.retry_kwargs or {})
        if task.retry_backoff and "countdown" not in options:
            options["countdown"] = task.backoff_countdown(request.retries)
        try:
            task.retry(exc=exc, **options)
        except Retry as retry:
            return Outcome(states.RETRY, exc=exc, einfo=exception_info(exc), retry=retry)
        except BaseException as final:  # retries used up: the task's own exception
            exc = final
    return Outcome(states.FAILURE, exc=exc, einfo=exception_info(exc))


def _after(task: Task[Any, Any], request: Context, args: tuple[Any, ...], kwargs: dict[str, Any],
           outcome: Outcome) -> None:
    task_id = str(request.id)
    try:
        if outcome.state == states.SUCCESS:
            task.on_success(outcome.retval, task_id, args, kwargs)
            if signals.task_success.receivers:
                signals.task_success.send(sender=task, result=outcome.retval)
        elif outcome.state == states.RETRY:
            assert outcome.exc is not None and outcome.einfo is not None
            task.on_retry(outcome.exc, task_id, args, kwargs, outcome.einfo)
            if signals.task_retry.receivers:
                signals.task_retry.send(sender=task, request=request, reason=outcome.exc, einfo=outcome.einfo)
        elif outcome.state == states.FAILURE:
            assert outcome.exc is not None and outcome.einfo is not None
            task.on_failure(outcome.exc, task_id, args, kwargs, outcome.einfo)
            if signals.task_failure.receivers:
                signals.task_failure.send(sender=task, task_id=task_id, exception=outcome.exc, args=args,
                                          kwargs=kwargs, traceback=outcome.einfo.tb, einfo=outcome.einfo)
        retval = outcome.retval if outcome.state == states.SUCCESS else outcome.exc
        task.after_return(outcome.state, retval, task_id, args, kwargs, outcome.einfo)
    except Exception:
        logger.exception("a handler of task %s[%s] raised; the task's outcome (%s) stands",
                         task.name, task_id, outcome.state)
    if signals.task_postrun.receivers:
        signals.task_postrun.send(sender=task, task_id=task_id, task=task, args=args, kwargs=kwargs,
                                  retval=outcome.retval if outcome.state == states.SUCCESS else outcome.exc,
                                  state=outcome.state)


def trace(task: Task[Any, Any], request: Context, args: tuple[Any, ...], kwargs: dict[str, Any],
          limiter: Limiter | None = None, limits: tuple[float | None, float | None] = (None, None)) -> Outcome:
    """Run a sync task with its handlers (and time limits); never raises."""
    token = _current.set((task, request))
    try:
        try:
            _before(task, request, args, kwargs)
            if limiter is not None:
                limiter.start(*limits)
                try:
                    retval = task(*args, **kwargs)
                finally:  # inside the try: a soft limit that fires while disarming is the task's outcome
                    limiter.stop()
            else:
                retval = task(*args, **kwargs)
            outcome = Outcome(states.SUCCESS, retval)
        except BaseException as exc:
            outcome = _classify(task, request, exc)
        _after(task, request, args, kwargs, outcome)
        return outcome
    finally:
        _current.reset(token)


async def run_with_limits(coro: Any, soft: float | None, hard: float | None) -> Any:
    """Await an async task under time limits.

    At the soft limit the task is cancelled (it sees `asyncio.CancelledError` at its current
    await, like `asyncio.timeout`) and has until the hard limit to finish its clean-up; if it
    does not return a value it fails with `SoftTimeLimitExceeded`. At the hard limit it fails
    with `TimeLimitExceeded`, and a task that still ignores cancellation is abandoned.
    """
    inner = asyncio.ensure_future(coro)
    first = soft or hard
    done, _ = await asyncio.wait({inner}, timeout=first)
    if done:
        return inner.result()
    inner.cancel()
    if soft and hard and hard > soft:
        done, _ = await asyncio.wait({inner}, timeout=hard - soft)
        if done and not inner.cancelled():
            try:
                return inner.result()
            except asyncio.CancelledError:
                pass
        if not done:
            raise TimeLimitExceeded(f"hard time limit ({hard}s) exceeded")
    elif not soft:
        raise TimeLimitExceeded(f"hard time limit ({hard}s) exceeded")
    raise SoftTimeLimitExceeded(f"soft time limit ({soft}s) exceeded")


async def trace_async(task: Task[Any, Any], request: Context, args: tuple[Any, ...],
                      kwargs: dict[str, Any], limits: tuple[float | None, float | None] = (None, None)) -> Outcome:
    """Run an `async def` task with its handlers on the running loop; never raises."""
    token = _current.set((task, request))
    try:
        try:
            _before(task, request, args, kwargs)
            if limits[0] or limits[1]:
                outcome = Outcome(states.SUCCESS, await run_with_limits(task(*args, **kwargs), *limits))
            else:
                outcome = Outcome(states.SUCCESS, await task(*args, **kwargs))
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and asyncio.current_task() is not None \
                    and asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise
            outcome = _classify(task, request, exc)
        _after(task, request, args, kwargs, outcome)
        return outcome
    finally:
        _current.reset(token)


def _run_coroutine(coro: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # apply() of an async task from inside a running loop: run it on a loop of its own.
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.setdefault("v", asyncio.run(coro)))
    thread.start()
    thread.join()
    return box["v"]


def apply_eagerly(task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any], *, task_id: str,
                  retries: int, throw: bool | None, options: dict[str, Any]) -> "EagerResult[Any]":
    from .result import EagerResult

    app = task.app
    parent = _current.get()
    parent_id = root_id = None
    if parent is not None and not parent[1].called_directly:
        parent_id, root_id = parent[1].id, parent[1].root_id
    while True:
        request = Context(
            id=task_id, task=task.name, args=args, kwargs=kwargs, retries=retries, is_eager=True,
            called_directly=False, hostname=_HOSTNAME, root_id=root_id or task_id, parent_id=parent_id,
            delivery_info={"is_eager": True, "routing_key": options.get("queue")},
            ignore_result=bool(options.get("ignore_result")), headers=options.get("headers"),
            **_eager_stamps(options))
        if task.is_async:
            outcome = _run_coroutine(trace_async(task, request, args, kwargs))
        else:
            outcome = trace(task, request, args, kwargs)
        if outcome.state != states.RETRY or outcome.retry is None:
            break
        # Eager retries run again at once, as in Celery: there is no broker to wait in.
        retry_options = getattr(outcome.retry, "retry_options", {})
        args = tuple(retry_options.get("args", args))
        kwargs = dict(retry_options.get("kwargs", kwargs))
        retries += 1
    if outcome.state == states.IGNORED and isinstance(outcome.exc, Replaced):
        # Task.replace() in eager mode ran the replacement already: its value is this task's.
        outcome = Outcome(states.SUCCESS, outcome.exc.value)
    propagate = app.conf.task_eager_propagates if throw is None else throw
    if outcome.state == states.FAILURE and propagate:
        assert outcome.exc is not None
        raise outcome.exc
    value = outcome.retval if outcome.state == states.SUCCESS else outcome.exc
    state = outcome.state
    traceback = outcome.einfo.traceback if outcome.einfo else None
    if app.conf.task_store_eager_result:
        app.store_state(task_id, state, value, request=request, task=task, traceback=traceback)
    return EagerResult(task_id, value, state, traceback, app=app, name=task.name)


def _eager_stamps(options: dict[str, Any]) -> dict[str, Any]:
    """The stamps of an eager call (canvas stamping), as the request fields a worker would set."""
    names = options.get("stamped_headers")
    if not names:
        return {}
    names = list(names) if isinstance(names, (list, tuple)) else [names]
    return {"stamped_headers": names, "stamps": {n: options.get(n) for n in names}}
