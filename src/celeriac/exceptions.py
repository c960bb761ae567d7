"""Every error celeriac raises on purpose, with Celery's names and class tree.

`from celeriac.exceptions import X` works for every name of Celery 5's `celery.exceptions`,
and `except X` catches what Celery's code would: e.g. `Retry`, `Ignore` and `Reject` are
`TaskPredicate`s, `NotRegistered` is a `KeyError` and a `TaskError`.
"""

from __future__ import annotations

import builtins
from typing import Any, NoReturn


class CeleriacError(Exception):
    """Base class of celeriac's own errors."""


CeleryError = CeleriacError


class TaskPredicate(CeleriacError):
    """Base class of the exceptions a task raises to steer the worker (Retry, Ignore, Reject)."""


class TaskError(CeleriacError):
    """A task-related error."""


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


class SecurityError(CeleriacError):
    """A security problem (e.g. a message signature that does not verify)."""


class NotRegistered(KeyError, TaskError):
    """No task with this name is registered in the app."""

    def __str__(self) -> str:
        return f"Task of name {self.args[0]!r} is not registered" if self.args else "not registered"


class AlreadyRegistered(TaskError):
    """A task of that name is already registered."""


class QueueNotFound(KeyError, TaskError):
    """A queue was named that the configuration does not define."""


class TimeoutError(TaskError, builtins.TimeoutError):  # noqa: A001 - Celery's public name
    """The operation (e.g. `AsyncResult.get(timeout=...)`) did not finish in time."""


class Retry(TaskPredicate):
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


class MaxRetriesExceededError(TaskError):
    """The task asked to retry more often than `max_retries` allows."""

    def __init__(self, *args: Any, task_args: Any = None, task_kwargs: Any = None) -> None:
        self.task_args = task_args
        self.task_kwargs = task_kwargs
        super().__init__(*args)


class SoftTimeLimitExceeded(CeleriacError):
    """Raised inside a running task when its soft time limit is reached."""


class TimeLimitExceeded(CeleriacError):
    """The task was ended because it ran past its hard time limit."""


class WorkerLostError(CeleriacError):
    """The worker process executing the task died (or the message kept killing workers)."""


class Terminated(CeleriacError):
    """The process running the task was ended by a signal (revoke(terminate=True))."""


class TaskRevokedError(TaskError):
    """The task was revoked (or expired) and did not run."""


class InvalidTaskError(TaskError):
    """A task message is malformed."""


class Ignore(TaskPredicate):
    """Raised by a task to tell the worker not to store any state for it."""


class Reject(TaskPredicate):
    """Raised by a task to reject its message (to the dead-letter queue, or back when requeue=True)."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)

    def __str__(self) -> str:
        return f"reject requeue={self.requeue}: {self.reason}"


class ChordError(TaskError):
    """A task in the header of a chord failed (the message names it), so the body did not run."""


class IncompleteStream(TaskError):
    """A result's children are asked for before the task has finished."""


class Replaced(Ignore):
    """Raised by `Task.replace()`: this task's place (and result id) now belongs to another."""

    def __init__(self, value: Any = None) -> None:
        super().__init__("replaced")
        self.value = value


# --- the rest of Celery's names: warnings, worker exits, result-store errors ---

class CeleryWarning(UserWarning):
    """Base class of the warnings celeriac gives (e.g. a Celery option it does not support)."""


CeleriacWarning = CeleryWarning


class AlwaysEagerIgnored(CeleryWarning):
    """An option that means nothing with task_always_eager was given."""


class DuplicateNodenameWarning(CeleryWarning):
    """Two workers use the same node name."""


class FixupWarning(CeleryWarning):
    """A framework fix-up (e.g. Django's) could not be applied."""


class NotConfigured(CeleryWarning):
    """No configuration was found."""


class SecurityWarning(CeleryWarning):
    """A setting that is unsafe (e.g. accepting pickle)."""


class CPendingDeprecationWarning(PendingDeprecationWarning):
    """Something will be deprecated."""


class CDeprecationWarning(DeprecationWarning):
    """Something is deprecated."""


class WorkerTerminate(SystemExit):
    """Raised (e.g. by a signal receiver) to stop the worker at once."""


SystemTerminate = WorkerTerminate


class WorkerShutdown(SystemExit):
    """Raised (e.g. by a signal receiver) to ask the worker for a warm shutdown."""


class BackendError(Exception):
    """Reading from or writing to the result store failed."""


class BackendGetMetaError(BackendError):
    """Reading a task's result from the result store failed."""

    def __init__(self, *args: Any, task_id: str = "", **kwargs: Any) -> None:
        super().__init__(*args)
        self.task_id = task_id


class BackendStoreError(BackendError):
    """Writing a task's result to the result store failed."""

    def __init__(self, *args: Any, state: str = "", task_id: str = "", **kwargs: Any) -> None:
        super().__init__(*args)
        self.state = state
        self.task_id = task_id


class CeleryCommandException(CeleriacError):
    """A command-line error with an exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def reraise(tp: type[BaseException], value: BaseException, tb: Any = None) -> NoReturn:
    """Raise `value` (of type `tp`) with traceback `tb`, as Celery's helper of that name."""
    if value.__traceback__ is not tb:
        raise value.with_traceback(tb)
    raise value


__all__ = [
    "reraise", "CeleryWarning", "CeleriacWarning", "AlwaysEagerIgnored", "DuplicateNodenameWarning",
    "FixupWarning", "NotConfigured", "SecurityWarning", "CeleryError", "CeleriacError", "ImproperlyConfigured",
    "SecurityError", "OperationalError", "EncodeError", "DecodeError", "ContentDisallowed", "TaskPredicate",
    "Ignore", "Reject", "Retry", "RetryTaskError", "TaskError", "QueueNotFound", "IncompleteStream",
    "NotRegistered", "AlreadyRegistered", "TimeoutError", "MaxRetriesExceededError", "TaskRevokedError",
    "InvalidTaskError", "ChordError", "BackendError", "BackendGetMetaError", "BackendStoreError",
    "SoftTimeLimitExceeded", "TimeLimitExceeded", "WorkerLostError", "Terminated", "CPendingDeprecationWarning",
    "CDeprecationWarning", "WorkerShutdown", "WorkerTerminate", "SystemTerminate", "CeleryCommandException",
    "Replaced",
]
