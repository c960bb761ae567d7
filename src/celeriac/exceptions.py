"""Every error celeriac raises on purpose, with Celery's names."""

from __future__ import annotations

import builtins
from typing import Any


class CeleriacError(Exception):
    """Base class of celeriac's own errors."""


CeleryError = CeleriacError


class ImproperlyConfigured(CeleriacError):
    """A setting, URL or option is wrong; the message says which and what is supported."""


class OperationalError(CeleriacError):
    """The broker or result store could not be reached or used."""


class EncodeError(CeleriacError, ValueError):
    """Arguments or a result could not be serialized."""


class DecodeError(CeleriacError, ValueError):
    """A message body could not be decoded."""


class ContentDisallowed(DecodeError):
    """A message used a serializer that `accept_content` does not allow."""


class NotRegistered(CeleriacError, KeyError):
    """No task with this name is registered in the app."""

    def __str__(self) -> str:
        return f"Task of name {self.args[0]!r} is not registered" if self.args else "not registered"


class QueueNotFound(CeleriacError, KeyError):
    """A queue was named that the configuration does not define."""


class TimeoutError(CeleriacError, builtins.TimeoutError):  # noqa: A001 - Celery's public name
    """The operation (e.g. `AsyncResult.get(timeout=...)`) did not finish in time."""


class Retry(CeleriacError):
    """Raised by `Task.retry()`: the worker records RETRY and the retry message is sent."""

    def __init__(self, message: str | None = None, exc: BaseException | None = None,
                 when: float | Any = None, **kwargs: Any) -> None:
        self.message = message
        self.exc = exc
        self.when = when
        super().__init__(message, exc, when)

    def humanize(self) -> str:
        if isinstance(self.when, (int, float)):
            return f"in {self.when}s"
        return f"at {self.when}"

    def __str__(self) -> str:
        if self.message:
            return self.message
        if self.exc is not None:
            return f"Retry {self.humanize()}: {self.exc!r}"
        return f"Retry {self.humanize()}"

    def __reduce__(self) -> Any:
        return self.__class__, (self.message, self.exc, self.when)


RetryTaskError = Retry


class MaxRetriesExceededError(CeleriacError):
    """The task asked to retry more often than `max_retries` allows."""

    def __init__(self, *args: Any, task_args: Any = None, task_kwargs: Any = None) -> None:
        self.task_args = task_args
        self.task_kwargs = task_kwargs
        super().__init__(*args)


class TaskError(CeleriacError):
    """A task-related error."""


class SoftTimeLimitExceeded(CeleriacError):
    """Raised inside a running task when its soft time limit is reached."""


class TimeLimitExceeded(CeleriacError):
    """The task was ended because it ran past its hard time limit."""


class WorkerLostError(CeleriacError):
    """The worker process executing the task died (or the message kept killing workers)."""


class TaskRevokedError(CeleriacError):
    """The task was revoked (or expired) and did not run."""


class InvalidTaskError(CeleriacError):
    """A task message is malformed."""


class Ignore(CeleriacError):
    """Raised by a task to tell the worker not to store any state for it."""


class Reject(CeleriacError):
    """Raised by a task to reject its message (to the dead-letter queue, or back when requeue=True)."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)

    def __str__(self) -> str:
        return f"reject requeue={self.requeue}: {self.reason}"


class ChordError(CeleriacError):
    """A task in the header of a chord failed (the message names it), so the body did not run."""


class IncompleteStream(CeleriacError):
    """A result's children are asked for before the task has finished."""


class Replaced(Ignore):
    """Raised by `Task.replace()`: this task's place (and result id) now belongs to another."""

    def __init__(self, value: Any = None) -> None:
        super().__init__("replaced")
        self.value = value
