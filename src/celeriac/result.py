"""AsyncResult and EagerResult: the state and outcome of a task, by id."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import states
from .exceptions import TaskRevokedError, TimeoutError
from .protocol import exception_from_dict

if TYPE_CHECKING:
    from .app import Celeriac

R = TypeVar("R")


def _in_running_task() -> bool:
    from .task import current_task_and_request
    current = current_task_and_request()
    return current is not None and not current[1].is_eager and not current[1].called_directly


class AsyncResult(Generic[R]):
    """A handle on a task's outcome; unknown ids are PENDING, as in Celery."""

    def __init__(self, id: str, app: "Celeriac | None" = None, task_name: str | None = None,
                 parent: "AsyncResult[Any] | None" = None) -> None:  # noqa: A002 - Celery's name
        from .app import current_app
        self.id = id
        self.app = app or current_app()
        self.task_name = task_name
        self.parent = parent
        self._cache: dict[str, Any] | None = None

    task_id = property(lambda self: self.id)

    # --- reading the store ---

    def _meta(self) -> dict[str, Any]:
        if self._cache is not None:
            return self._cache
        meta = self.app.backend.get(self.id)
        return self._remember(meta)

    def _remember(self, meta: dict[str, Any] | None) -> dict[str, Any]:
        if meta is None:
            return {"status": states.PENDING, "result": None, "traceback": None}
        if meta.get("status") in states.READY_STATES:
            self._cache = meta
        return meta

    @property
    def state(self) -> str:
        return str(self._meta()["status"])

    status = state

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    @property
    def result(self) -> Any:
        """The return value, or the exception for FAILURE/RETRY/REVOKED, or custom-state meta."""
        meta = self._meta()
        return self._value(meta)

    info = result

    @property
    def traceback(self) -> str | None:
        tb = self._meta().get("traceback")
        return str(tb) if tb else None

    @property
    def date_done(self) -> datetime | None:
        value = self._meta().get("date_done")
        return datetime.fromisoformat(value) if value else None

    @property
    def name(self) -> str | None:
        return self._meta().get("name") or self.task_name

    @property
    def args(self) -> Any:
        return self._meta().get("args")

    @property
    def kwargs(self) -> Any:
        return self._meta().get("kwargs")

    @property
    def retries(self) -> int | None:
        return self._meta().get("retries")

    @property
    def worker(self) -> str | None:
        return self._meta().get("worker")

    @property
    def children(self) -> list["AsyncResult[Any]"]:
        return [AsyncResult(c, app=self.app) for c in self._meta().get("children") or []]

    def _value(self, meta: dict[str, Any]) -> Any:
        status = meta.get("status")
        value = meta.get("result")
        if status in states.EXCEPTION_STATES and value is not None:
            return exception_from_dict(value)
        return value

    # --- waiting ---

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
            disable_sync_subtasks: bool = True, **_ignored: Any) -> R:
        """Wait for the task to finish and return its value (or raise its exception).

        Waiting is event-driven where the store supports it; `interval` only matters for
        stores that must be polled.
        """
        if disable_sync_subtasks and _in_running_task():
            raise RuntimeError(
                "Never call result.get() within a task: it can deadlock the worker. "
                "Chain the tasks instead, or pass disable_sync_subtasks=False if you must.")
        meta = self._wait(timeout)
        status = meta.get("status")
        if status not in states.READY_STATES:
            raise TimeoutError(f"task {self.id} is not ready after {timeout}s (state {status})")
        if status in states.PROPAGATE_STATES and propagate:
            if status == states.REVOKED and not isinstance(meta.get("result"), dict):
                raise TaskRevokedError(f"task {self.id} was revoked")
            raise self._value(meta)
        return self._value(meta)  # type: ignore[no-any-return]

    wait = get

    def _wait(self, timeout: float | None) -> dict[str, Any]:
        if self._cache is not None:
            return self._cache
        backend = self.app.backend
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = 60.0 if deadline is None else deadline - time.monotonic()
            meta = self._remember(backend.wait(self.id, max(0.0, remaining)))
            if meta.get("status") in states.READY_STATES:
                return meta
            if deadline is not None and time.monotonic() >= deadline:
                return meta

    # --- lifecycle ---

    def forget(self) -> None:
        """Remove the stored result."""
        self._cache = None
        self.app.backend.forget([self.id])

    def revoke(self, terminate: bool = False, signal: str | None = None) -> None:
        """Revoke the task: a worker will not run it (it is marked REVOKED)."""
        self.app.control.revoke(self.id, terminate=terminate, signal=signal)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __str__(self) -> str:
        return self.id

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id}>"


class EagerResult(AsyncResult[R]):
    """The outcome of a task run in this process by `apply()` or in eager mode."""

    def __init__(self, id: str, ret_value: Any, state: str, traceback: str | None = None,
                 app: "Celeriac | None" = None, name: str | None = None) -> None:  # noqa: A002
        super().__init__(id, app=app, task_name=name)
        self._cache = {
            "status": state, "result": ret_value, "traceback": traceback,
            "date_done": datetime.now().astimezone().isoformat(), "task_id": id, "name": name,
        }

    def _value(self, meta: dict[str, Any]) -> Any:
        return meta.get("result")

    def ready(self) -> bool:
        return True  # it ran to the end before apply() returned

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
            disable_sync_subtasks: bool = True, **_ignored: Any) -> R:
        """The value (or the exception, raised): nothing to wait for, so no deadlock check."""
        meta: dict[str, Any] = self._cache or {}
        if meta.get("status") in states.PROPAGATE_STATES and propagate:
            raise meta["result"]
        return meta.get("result")  # type: ignore[return-value]

    def forget(self) -> None:
        """Nothing is stored for an eager result."""
