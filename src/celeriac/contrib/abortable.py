"""Abortable tasks, as Celery's `celery.contrib.abortable`: a client asks, the task checks.

    @app.task(bind=True, base=AbortableTask)
    def crunch(self, n):
        for i in range(n):
            if self.is_aborted():
                return "stopped"      # clean up and end; the final state is what it returns
            ...

    result = crunch.delay(10_000)
    result.abort()                    # state ABORTED until the task ends

The request is the state ABORTED in the result store, so it works on every store and from
any client; the task sees it at its next `is_aborted()` (one result-store read each call).
A task that has already finished keeps its final state: there is nothing left to abort.
"""

from __future__ import annotations

from typing import Any

from ..result import AsyncResult
from ..task import Task

ABORTED = "ABORTED"


class AbortableAsyncResult(AsyncResult[Any]):
    """An AsyncResult that can ask its task to stop."""

    def is_aborted(self) -> bool:
        return self.state == ABORTED

    def abort(self) -> None:
        """Ask the task to stop: it sees `is_aborted()` become True. Does not interrupt it."""
        self.app.store_state(self.id, ABORTED, None)


class AbortableTask(Task[Any, Any]):
    """A base class (`base=AbortableTask`) for tasks that check `self.is_aborted()`."""

    abstract = True

    def AsyncResult(self, task_id: str) -> AbortableAsyncResult:  # noqa: N802
        return AbortableAsyncResult(task_id, app=self.app, task_name=self.name)

    def is_aborted(self, **kwargs: Any) -> bool:
        """Whether a client asked this task (or `task_id=`) to stop."""
        task_id = kwargs.get("task_id", self.request.id)
        if task_id is None:
            return False
        return self.AsyncResult(task_id).is_aborted()


__all__ = ["ABORTED", "AbortableAsyncResult", "AbortableTask"]
