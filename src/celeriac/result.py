"""AsyncResult and EagerResult: the state and outcome of a task, by id."""

from __future__ import annotations

import contextlib
import contextvars
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterator, Sequence, TypeAlias, TypeVar

from . import states
from .exceptions import IncompleteStream, TaskRevokedError, TimeoutError
from .protocol import exception_from_dict

if TYPE_CHECKING:
    from .app import Celeriac
    from .backends.base import ResultStore

R = TypeVar("R")


def _in_running_task() -> bool:
    from .task import current_task_and_request
    if _join_allowed.get():
        return False
    current = current_task_and_request()
    return current is not None and not current[1].is_eager and not current[1].called_directly


_join_allowed: contextvars.ContextVar[bool] = contextvars.ContextVar("celeriac_join_allowed", default=False)


@contextlib.contextmanager
def allow_join_result() -> Iterator[None]:
    """Celery's escape hatch: `with allow_join_result(): r.get()` inside a task (it can deadlock
    a worker whose slots all wait; prefer a chain or chord)."""
    token = _join_allowed.set(True)
    try:
        yield
    finally:
        _join_allowed.reset(token)


@contextlib.contextmanager
def denied_join_result() -> Iterator[None]:
    """The opposite of allow_join_result(): get() inside a task refuses again."""
    token = _join_allowed.set(False)
    try:
        yield
    finally:
        _join_allowed.reset(token)


class AsyncResult(Generic[R]):
    """A handle on a task's outcome; unknown ids are PENDING, as in Celery."""

    def __init__(self, id: str, app: "Celeriac | None" = None, task_name: str | None = None,
                 parent: "ResultBase | None" = None, backend: "ResultStore | None" = None) -> None:  # noqa: A002
        if id is None:
            raise ValueError("AsyncResult needs a task id, not None")
        self.id = id
        if app is None:
            from .app import current_app
            app = current_app()
        self.app = app
        self.task_name = task_name
        self._parent: ResultBase | None = parent
        self._cache: dict[str, Any] | None = None
        self._backend = backend
        #: True when the task was sent with ignore_result: get() returns None at once (as in Celery).
        self.ignored = False

    @property
    def backend(self) -> "ResultStore":
        return self._backend if self._backend is not None else self.app.backend

    @property
    def supports_native_join(self) -> bool:
        return True

    @property
    def parent(self) -> "ResultBase | None":
        """The result this one came from: the previous step of a chain (known in memory when
        the chain was sent from here, otherwise read from the stored parent_id)."""
        if self._parent is None:
            parent_id = self._meta().get("parent_id")
            if parent_id:
                self._parent = AsyncResult(parent_id, app=self.app)
        return self._parent

    @parent.setter
    def parent(self, value: "ResultBase | None") -> None:
        self._parent = value

    task_id = property(lambda self: self.id)

    # --- reading the store ---

    def _meta(self) -> dict[str, Any]:
        if self._cache is not None:
            return self._cache
        meta = self.backend.get(self.id)
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
    def queue(self) -> str | None:
        """The queue the task came from (stored with `result_extended = True`)."""
        return self._meta().get("queue")

    @property
    def date_started(self) -> datetime | None:
        """When the task's last run began (stored with `result_extended = True`)."""
        value = self._meta().get("date_started")
        return datetime.fromisoformat(value) if value else None

    @property
    def children(self) -> list["ResultBase"]:
        """The tasks, groups and next chain steps this task started (as stored with its result)."""
        return [result_from_child(c, self.app) for c in self._meta().get("children") or []]

    def iterdeps(self, intermediate: bool = False) -> Iterator[tuple["ResultBase | None", "ResultBase"]]:
        """(parent, node) for this result and everything it started, depth first."""
        stack: list[tuple[ResultBase | None, ResultBase]] = [(None, self)]
        while stack:
            parent, node = stack.pop()
            yield parent, node
            if isinstance(node, GroupResult):
                kids: list[ResultBase] = list(node.results)
            else:
                if not node.ready() and not intermediate:
                    raise IncompleteStream(f"task {node.id} has not finished, so its children are not known")
                kids = node.children
            stack.extend((node, kid) for kid in reversed(kids))

    def collect(self, intermediate: bool = False, timeout: float | None = None,
                **kwargs: Any) -> Iterator[tuple["ResultBase", Any]]:
        """Walk the whole tree this task started, waiting for each node: yields (result, value).

        Waits (up to `timeout` per node) rather than failing on unfinished nodes, so a
        running workflow can be collected as it completes.
        """
        stack: list[ResultBase] = [self]
        while stack:
            node = stack.pop()
            if isinstance(node, GroupResult):
                yield node, node.get(timeout=timeout, **kwargs)
                stack.extend(reversed(node.results))
                continue
            value = node.get(timeout=timeout, **kwargs)
            yield node, value
            stack.extend(reversed(node.children))

    def graph_ids(self) -> list[str]:
        """Ids of this result and all its stored descendants (handy for logging a workflow)."""
        return [str(node.id) for _, node in self.iterdeps(intermediate=True)]

    def _value(self, meta: dict[str, Any]) -> Any:
        status = meta.get("status")
        value = meta.get("result")
        if status in states.EXCEPTION_STATES and value is not None:
            return exception_from_dict(value)
        return value

    # --- waiting ---

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
            disable_sync_subtasks: bool = True, follow_parents: bool = True,
            on_interval: Callable[[], Any] | None = None, **_ignored: Any) -> R:
        """Wait for the task to finish and return its value (or raise its exception).

        As in Celery, a failure of a parent known to this handle (the earlier steps of a chain
        sent from here, a chord's header) is raised first, with the failed task's own
        exception: `chord(header)(body).get()` raises the header task's error, while the
        body's stored result is a ChordError. A result sent with ignore_result returns None
        at once. Waiting is event-driven where the store supports it; `interval` is how often
        the parents are checked (and the poll interval of stores that must be polled).
        """
        if self.ignored:
            return None  # type: ignore[return-value]
        if disable_sync_subtasks and _in_running_task():
            raise RuntimeError(
                "Never call result.get() within a task: it can deadlock the worker. "
                "Chain the tasks instead, or pass disable_sync_subtasks=False if you must.")
        checks: list[Callable[[], Any]] = [c for c in (on_interval,) if c is not None]
        if follow_parents and propagate and self._parent is not None:
            self._maybe_reraise_parent_error()
            checks.insert(0, self._maybe_reraise_parent_error)
        return self._outcome(self._wait(timeout, checks, interval), timeout, propagate)

    wait = get

    async def aget(self, timeout: float | None = None, propagate: bool = True, **_ignored: Any) -> R:
        """`get()` for asyncio code: awaits the result without blocking the event loop."""
        from .aio import client
        return await client.aget(self, timeout, propagate)

    async def aready(self) -> bool:
        """`ready()` for asyncio code."""
        from .aio import client
        return await client.aready(self)

    def _outcome(self, meta: dict[str, Any], timeout: float | None, propagate: bool) -> R:
        """The value of a waited-for meta, or the task's exception, or TimeoutError (not ready)."""
        status = meta.get("status")
        if status not in states.READY_STATES:
            raise TimeoutError(f"task {self.id} is not ready after {timeout}s (state {status})")
        if status in states.PROPAGATE_STATES and propagate:
            raise self._error(meta)
        return self._value(meta)  # type: ignore[no-any-return]

    def _error(self, meta: dict[str, Any]) -> BaseException:
        if meta.get("status") == states.REVOKED and not isinstance(meta.get("result"), dict):
            return TaskRevokedError(f"task {self.id} was revoked")
        error = self._value(meta)
        return error if isinstance(error, BaseException) else Exception(error)

    def maybe_throw(self, propagate: bool = True, callback: Callable[[str, Any], Any] | None = None) -> Any:
        """Raise the task's exception if it failed (or was revoked); else return its value so far."""
        meta = self._meta()
        if meta.get("status") in states.PROPAGATE_STATES and propagate:
            raise self._error(meta)
        value = self._value(meta)
        if callback is not None:
            callback(self.id, value)
        return value

    maybe_reraise = maybe_throw

    def _parents(self) -> Iterator["ResultBase"]:
        """The parents this handle knows in memory (never read from the store, as in Celery)."""
        node = self._parent
        while node is not None:
            yield node
            node = node.__dict__.get("_parent", node.__dict__.get("parent"))

    def _maybe_reraise_parent_error(self) -> None:
        for node in reversed(list(self._parents())):  # the first failure in the workflow wins
            node.maybe_throw()

    def _wait(self, timeout: float | None, checks: Sequence[Callable[[], Any]] = (),
              interval: float = 0.5) -> dict[str, Any]:
        if self._cache is not None:
            return self._cache
        backend = self.backend
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = 60.0 if deadline is None else deadline - time.monotonic()
            if checks:
                remaining = min(remaining, max(0.01, interval))
            meta = self._remember(backend.wait(self.id, max(0.0, remaining)))
            for check in checks:  # also after the last wait: a parent's own error beats what follows it
                check()
            if meta.get("status") in states.READY_STATES:
                return meta
            if deadline is not None and time.monotonic() >= deadline:
                return meta

    def exists(self) -> bool:
        """True if the store holds a state for this id (PENDING cannot tell "unknown" apart)."""
        return self._cache is not None or self.backend.get(self.id) is not None

    def as_tuple(self) -> tuple[Any, None]:
        parent = self._parent
        return (self.id, parent.as_tuple() if parent is not None else None), None

    def as_list(self) -> list[str]:
        """This id and the ids of its parents known in memory."""
        return [str(self.id)] + [str(p.id) for p in self._parents()]

    # --- lifecycle ---

    def forget(self) -> None:
        """Remove the stored result, and those of its parents known in memory (as in Celery)."""
        self._cache = None
        if self._parent is not None:
            self._parent.forget()
        self.backend.forget([self.id])

    def revoke(self, terminate: bool = False, signal: str | None = None) -> None:
        """Revoke the task: a worker will not run it (it is marked REVOKED). For a chord's
        result (whose parent here is the header's GroupResult), the header tasks too."""
        ids = [self.id]
        if isinstance(self._parent, GroupResult):
            ids += self._parent._task_ids()  # nested groups: their tasks
        self.app.control.revoke(ids, terminate=terminate, signal=signal)

    def revoke_by_stamped_headers(self, headers: dict[str, Any], terminate: bool = False,
                                  signal: str | None = None, **kwargs: Any) -> None:
        """Revoke every task stamped with these stamps (canvas stamping), as Celery's method."""
        self.app.control.revoke_by_stamped_headers(headers, terminate=terminate, signal=signal)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled without its app (bound to the current app when unpickled), as signatures are."""
        return type(self), (self.id, None, self.task_name, self._parent)

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
            disable_sync_subtasks: bool = True, follow_parents: bool = True,
            on_interval: Callable[[], Any] | None = None, **_ignored: Any) -> R:
        """The value (or the exception, raised): nothing to wait for, so no deadlock check."""
        meta: dict[str, Any] = self._cache or {}
        if meta.get("status") in states.PROPAGATE_STATES and propagate:
            raise meta["result"]
        return meta.get("result")  # type: ignore[return-value]

    def maybe_throw(self, propagate: bool = True, callback: Callable[[str, Any], Any] | None = None) -> Any:
        value = self.get(propagate=propagate)
        if callback is not None:
            callback(self.id, value)
        return value

    def __reduce__(self) -> tuple[Any, ...]:
        meta = self._cache or {}
        return type(self), (self.id, meta.get("result"), meta.get("status"), meta.get("traceback"), None,
                            meta.get("name"))

    def forget(self) -> None:
        """Nothing is stored for an eager result."""


def result_from_child(child: Any, app: "Celeriac") -> "ResultBase":
    """A stored child entry in Celery's layout - [[id, parent], None] for a task, [[id, parent],
    [entries]] for a group - or as older celeriac wrote it (an id, {"group": id, "results": [...]})."""
    if isinstance(child, dict) and "group" in child:
        return GroupResult(child["group"], [result_from_child(c, app) for c in child.get("results") or []], app=app)
    if isinstance(child, (list, tuple)) and len(child) == 2:
        head, nodes = child
        node_id = head[0] if isinstance(head, (list, tuple)) and head else head
        if isinstance(nodes, (list, tuple)):
            return GroupResult(str(node_id), [result_from_child(c, app) for c in nodes], app=app)
        return AsyncResult(str(node_id), app=app)
    return AsyncResult(str(child), app=app)


def result_from_tuple(r: Any, app: "Celeriac | None" = None) -> "ResultBase":
    """Rebuild a result from its `as_tuple()` form (Celery's function), parents included."""
    if isinstance(r, (AsyncResult, GroupResult)):
        return r
    from .app import current_app
    app = app or current_app()
    head, nodes = r
    task_id, parent = head if isinstance(head, (list, tuple)) else (head, None)
    parent_result = result_from_tuple(parent, app) if parent else None
    if nodes is not None:
        return GroupResult(task_id, [result_from_tuple(n, app) for n in nodes], app=app, parent=parent_result)
    return AsyncResult(task_id, app=app, parent=parent_result)


def child_entry(result: "ResultBase") -> Any:
    """How a started task or group is written into its parent's `children`: Celery's result
    tuples, so a Celery client reading this meta (a mixed fleet) understands them too."""
    if isinstance(result, GroupResult):
        return [[result.id, None], [child_entry(r) for r in result.results]]
    return [[result.id, None], None]


# The group results live in their own module; imported last because they build on AsyncResult.
from ._groups import GroupResult, ResultSet  # noqa: E402

ResultBase: TypeAlias = AsyncResult | GroupResult  # type: ignore[type-arg]

__all__ = ["AsyncResult", "EagerResult", "GroupResult", "ResultBase", "ResultSet", "child_entry",
           "result_from_child", "result_from_tuple"]
