"""AsyncResult and EagerResult: the state and outcome of a task, by id."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Iterator, Sequence, TypeVar

from . import states
from .exceptions import IncompleteStream, TaskRevokedError, TimeoutError
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
                 parent: "ResultBase | None" = None) -> None:  # noqa: A002 - Celery's name
        from .app import current_app
        self.id = id
        self.app = app or current_app()
        self.task_name = task_name
        self._parent: ResultBase | None = parent
        self._cache: dict[str, Any] | None = None

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
            disable_sync_subtasks: bool = True, **_ignored: Any) -> R:
        """Wait for the task to finish and return its value (or raise its exception).

        Waiting is event-driven where the store supports it; `interval` only matters for
        stores that must be polled.
        """
        if disable_sync_subtasks and _in_running_task():
            raise RuntimeError(
                "Never call result.get() within a task: it can deadlock the worker. "
                "Chain the tasks instead, or pass disable_sync_subtasks=False if you must.")
        return self._outcome(self._wait(timeout), timeout, propagate)

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
        """Revoke the task: a worker will not run it (it is marked REVOKED). For a chord's
        result (whose parent here is the header's GroupResult), the header tasks too."""
        ids = [self.id]
        if isinstance(self._parent, GroupResult):
            ids += [r.id for r in self._parent.results if r.id]
        self.app.control.revoke(ids, terminate=terminate, signal=signal)

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


def result_from_child(child: Any, app: "Celeriac") -> "ResultBase":
    """A stored child entry: a task id, or {"group": id, "results": [ids]}."""
    if isinstance(child, dict) and "group" in child:
        return GroupResult(child["group"], [result_from_child(c, app) for c in child.get("results") or []], app=app)
    if isinstance(child, (list, tuple)):  # Celery's ((id, parent), None) tuples
        while isinstance(child, (list, tuple)) and child:
            child = child[0]
    return AsyncResult(str(child), app=app)


def child_entry(result: "ResultBase") -> Any:
    """How a started task or group is written into its parent's `children`."""
    if isinstance(result, GroupResult):
        return {"group": result.id, "results": [child_entry(r) for r in result.results]}
    return result.id


class GroupResult:
    """The results of a group, in the group's order."""

    def __init__(self, id: str | None = None, results: Sequence["ResultBase"] | None = None,  # noqa: A002
                 app: "Celeriac | None" = None, parent: "ResultBase | None" = None) -> None:
        from .app import current_app
        self.id = id
        self.results: list[ResultBase] = list(results or [])
        self.app = app or current_app()
        self.parent = parent

    children = property(lambda self: self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator["ResultBase"]:
        return iter(self.results)

    def __getitem__(self, index: int) -> "ResultBase":
        return self.results[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return other.id == self.id and other.results == self.results
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id or '' for r in self.results)}]>"

    # --- state, read in batches ---

    def _refresh(self) -> None:
        """Read the stored state of every unfinished member in as few round trips as possible."""
        pending = [r for r in self.results if isinstance(r, AsyncResult) and not isinstance(r, EagerResult)
                   and r._cache is None]
        if not pending:
            return
        found = self.app.backend.get_many([r.id for r in pending])
        for r in pending:
            meta = found.get(r.id)
            if meta is not None:
                r._remember(meta)

    def _states(self) -> list[str]:
        self._refresh()
        out = []
        for r in self.results:
            if isinstance(r, GroupResult):
                out.append(states.SUCCESS if r.successful() else states.FAILURE if r.failed()
                           else states.PENDING)
            elif r._cache is not None:
                out.append(str(r._cache["status"]))
            else:
                out.append(r.state)
        return out

    def completed_count(self) -> int:
        """How many members succeeded."""
        return sum(1 for s in self._states() if s == states.SUCCESS)

    def ready(self) -> bool:
        return all(s in states.READY_STATES for s in self._states())

    def successful(self) -> bool:
        return all(s == states.SUCCESS for s in self._states())

    def failed(self) -> bool:
        return any(s == states.FAILURE for s in self._states())

    def waiting(self) -> bool:
        return any(s not in states.READY_STATES for s in self._states())

    # --- waiting ---

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
            disable_sync_subtasks: bool = True, **kwargs: Any) -> list[Any]:
        """Wait for every member; their values in order (the first failure is raised)."""
        return self.join(timeout=timeout, propagate=propagate, interval=interval,
                         disable_sync_subtasks=disable_sync_subtasks, **kwargs)

    def join(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
             disable_sync_subtasks: bool = True, **kwargs: Any) -> list[Any]:
        """Wait for every member (one shared deadline) and return their values in order."""
        if disable_sync_subtasks and _in_running_task():
            raise RuntimeError(
                "Never call result.get() within a task: it can deadlock the worker. "
                "Chain the tasks instead, or pass disable_sync_subtasks=False if you must.")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._refresh()
            waiting = [r for r in self.results if not r.ready()]
            failed = next((r for r in self.results if isinstance(r, AsyncResult) and r._cache is not None
                           and r._cache.get("status") in states.PROPAGATE_STATES), None)
            if failed is not None and propagate:
                failed.get(propagate=True, disable_sync_subtasks=False)
            if not waiting:
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"group {self.id}: {len(waiting)} of {len(self.results)} task(s) not "
                                   f"ready after {timeout}s (first waiting: {waiting[0].id})")
            first = waiting[0]
            if isinstance(first, GroupResult):
                first.join(timeout=remaining, propagate=propagate, disable_sync_subtasks=False)
            else:
                # Wait on the first unfinished member; the next pass reads all the others at once.
                first._wait(None if remaining is None else remaining)
        return [r.get(propagate=propagate, disable_sync_subtasks=False) for r in self.results]

    join_native = join

    async def aget(self, timeout: float | None = None, propagate: bool = True, **_ignored: Any) -> list[Any]:
        """`get()` for asyncio code: every member's value, in order, without blocking the loop."""
        from .aio import client
        return await client.group_aget(self, timeout, propagate)

    async def aready(self) -> bool:
        """`ready()` for asyncio code: every member finished."""
        return all([await r.aready() for r in self.results])

    def iter_native(self, timeout: float | None = None) -> Iterator[tuple[str | None, Any]]:
        for r in self.results:
            yield r.id, r.get(timeout=timeout, propagate=False, disable_sync_subtasks=False)

    # --- lifecycle ---

    def forget(self) -> None:
        for r in self.results:
            r.forget()
        if self.id:
            self.app.backend.forget_group(self.id)

    def revoke(self, terminate: bool = False, signal: str | None = None) -> None:
        """Revoke every member."""
        self.app.control.revoke([r.id for r in self.results if r.id], terminate=terminate, signal=signal)

    def save(self, backend: Any = None) -> "GroupResult":
        """Store the member ids so that `GroupResult.restore(id)` works in any process."""
        if self.id is None:
            raise ValueError("a GroupResult needs an id to be saved")
        (backend or self.app.backend).save_group(self.id, [child_entry(r) for r in self.results])
        return self

    @classmethod
    def restore(cls, id: str, backend: Any = None, app: "Celeriac | None" = None) -> "GroupResult | None":  # noqa: A002
        """The group saved under `id`, or None."""
        from .app import current_app
        app = app or current_app()
        children = (backend or app.backend).restore_group(id)
        if children is None:
            return None
        return cls(id, [result_from_child(c, app) for c in children], app=app)

    def delete(self, backend: Any = None) -> None:
        if self.id:
            (backend or self.app.backend).forget_group(self.id)


ResultBase = AsyncResult | GroupResult  # type: ignore[type-arg]
