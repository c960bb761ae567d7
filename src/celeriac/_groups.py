"""ResultSet and GroupResult: many results waited on and inspected together (Celery's classes).

States are read in batches (one round trip for every unfinished member), and waiting follows
the first unfinished member, so a group of a thousand tasks costs a handful of reads.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from . import states
from .exceptions import TimeoutError
from .result import AsyncResult, EagerResult, _in_running_task, result_from_child

if TYPE_CHECKING:
    from .app import Celeriac
    from .backends.base import ResultStore
    from .result import ResultBase


class ResultSet:
    """A set of results, kept in order (Celery's ResultSet): add, wait on and inspect them together."""

    def __init__(self, results: Iterable["ResultBase"] | None = None, app: "Celeriac | None" = None,
                 **_ignored: Any) -> None:
        self.results: list[ResultBase] = results if isinstance(results, list) else list(results or [])
        self._app = app

    @property
    def app(self) -> "Celeriac":
        if self._app is None:
            from .app import current_app
            self._app = self.results[0].app if self.results else current_app()
        return self._app

    @app.setter
    def app(self, app: "Celeriac") -> None:
        self._app = app

    @property
    def backend(self) -> "ResultStore":
        return self.app.backend

    supports_native_join = True

    # --- membership ---

    def add(self, result: "ResultBase") -> None:
        """Add a result; nothing happens if it is a member already."""
        if result not in self.results:
            self.results.append(result)

    def remove(self, result: "ResultBase | str") -> None:
        """Remove a member (a result or a task id); KeyError if it is not one."""
        if isinstance(result, str):
            result = AsyncResult(result, app=self.app)
        try:
            self.results.remove(result)
        except ValueError:
            raise KeyError(result) from None

    def discard(self, result: "ResultBase | str") -> None:
        """Remove a member if it is one."""
        try:
            self.remove(result)
        except KeyError:
            pass

    def update(self, results: Iterable["ResultBase"]) -> None:
        """Add the results that are not members yet."""
        self.results.extend(r for r in results if r not in self.results)

    def clear(self) -> None:
        """Remove every member (the same list object stays)."""
        self.results[:] = []

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator["ResultBase"]:
        return iter(self.results)

    def __getitem__(self, index: int) -> "ResultBase":
        return self.results[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultSet):
            return other.results == self.results
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled without the app (bound to the current app when unpickled)."""
        return type(self), (self.results,)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(str(r.id) for r in self.results)}]>"

    # --- state, read in batches ---

    def _refresh(self) -> dict[str, dict[str, Any]]:
        """Read the stored state of every unfinished member in one round trip; the metas read
        (finished ones are also cached on their handles)."""
        pending = [r for r in self.results if isinstance(r, AsyncResult) and not isinstance(r, EagerResult)
                   and r._cache is None]
        if not pending:
            return {}
        found = self.backend.get_many([r.id for r in pending])
        for r in pending:
            meta = found.get(r.id)
            if meta is not None:
                r._remember(meta)
        return found

    def _states(self) -> list[str]:
        found = self._refresh()
        out = []
        for r in self.results:
            if isinstance(r, ResultSet):
                out.append(states.SUCCESS if r.successful() else states.FAILURE if r.failed()
                           else states.PENDING)
            elif r._cache is not None:
                out.append(str(r._cache["status"]))
            else:  # not final: what the batch read said, without another read per member
                out.append(str((found.get(r.id) or {}).get("status") or states.PENDING))
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

    def maybe_throw(self, callback: Callable[[str, Any], Any] | None = None, propagate: bool = True) -> None:
        """Raise the first failed member's exception, in member order."""
        self._refresh()
        for r in self.results:
            # A member still unfinished after the batch read cannot have failed: skip its own read.
            if isinstance(r, ResultSet) or r._cache is not None:
                r.maybe_throw(callback=callback, propagate=propagate)

    maybe_reraise = maybe_throw

    # --- waiting ---

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
            disable_sync_subtasks: bool = True, callback: Callable[[str, Any], Any] | None = None,
            **kwargs: Any) -> list[Any]:
        """Wait for every member; their values in order (see join)."""
        return self.join(timeout=timeout, propagate=propagate, interval=interval,
                         disable_sync_subtasks=disable_sync_subtasks, callback=callback, **kwargs)

    def join(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
             disable_sync_subtasks: bool = True, callback: Callable[[str, Any], Any] | None = None,
             **kwargs: Any) -> list[Any]:
        """Wait for every member (one shared deadline) and return their values in order.

        With `propagate`, the first member seen failing raises its own exception (without
        waiting for the others, as Celery's native join does). With `callback`, it is called
        as `callback(task_id, value)` for each member instead, and the list is empty.
        """
        if disable_sync_subtasks and _in_running_task():
            raise RuntimeError(
                "Never call result.get() within a task: it can deadlock the worker. "
                "Chain the tasks instead, or pass disable_sync_subtasks=False if you must.")
        self._wait_all(timeout, propagate)
        values = [r.get(propagate=propagate, disable_sync_subtasks=False, follow_parents=False)
                  for r in self.results]
        if callback is None:
            return values
        for r, value in zip(self.results, values, strict=True):
            callback(str(r.id), value)
        return []

    join_native = join

    async def aget(self, timeout: float | None = None, propagate: bool = True, **_ignored: Any) -> list[Any]:
        """`get()` for asyncio code: every member's value, in order, without blocking the loop."""
        from .aio import client
        return await client.group_aget(self, timeout, propagate)  # type: ignore[arg-type]

    async def aready(self) -> bool:
        """`ready()` for asyncio code: every member finished."""
        return all([await r.aready() for r in self.results])

    def _wait_all(self, timeout: float | None, propagate: bool) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._refresh()
            # Finished members are cached by the batch read: no read per member here.
            waiting = [r for r in self.results if (not r.ready() if isinstance(r, ResultSet) else r._cache is None)]
            failed = next((r for r in self.results if isinstance(r, AsyncResult) and r._cache is not None
                           and r._cache.get("status") in states.PROPAGATE_STATES), None)
            if failed is not None and propagate:
                failed.maybe_throw()
            if not waiting:
                return
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"{self!r}: {len(waiting)} of {len(self.results)} task(s) not "
                                   f"ready after {timeout}s (first waiting: {waiting[0].id})")
            first = waiting[0]
            if isinstance(first, ResultSet):
                first._wait_all(remaining, propagate)
            else:
                # Wait on the first unfinished member; the next pass reads all the others at once.
                first._wait(remaining)

    def iter_native(self, timeout: float | None = None, **_ignored: Any) -> Iterator[tuple[str | None, Any]]:
        """(task id, meta) for each member as Celery yields them, in member order: the meta's
        `status` and `result` (the exception for a failure); a nested group's is its values."""
        self._wait_all(timeout, propagate=False)
        for r in self.results:
            if isinstance(r, ResultSet):
                yield r.id if isinstance(r, GroupResult) else None, r.join(propagate=False,
                                                                           disable_sync_subtasks=False)
                continue
            meta = dict(r._wait(0))
            meta["result"] = r._value(meta)
            yield r.id, meta

    # --- lifecycle ---

    def forget(self) -> None:
        for r in self.results:
            r.forget()

    def revoke(self, terminate: bool = False, signal: str | None = None, **_ignored: Any) -> None:
        """Revoke every member (the tasks of nested groups too)."""
        self.app.control.revoke(self._task_ids(), terminate=terminate, signal=signal)

    def _task_ids(self) -> list[str]:
        return [i for r in self.results for i in (r._task_ids() if isinstance(r, ResultSet) else [r.id]) if i]


class GroupResult(ResultSet):
    """The results of a group, in the group's order, with the group's id."""

    def __init__(self, id: str | None = None, results: Sequence["ResultBase"] | None = None,  # noqa: A002
                 app: "Celeriac | None" = None, parent: "ResultBase | None" = None, **kwargs: Any) -> None:
        from .app import current_app
        super().__init__(list(results or []), app=app or current_app(), **kwargs)
        self.id = id
        self.parent = parent

    children = property(lambda self: self.results)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return other.id == self.id and other.results == self.results
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:  # type: ignore[override]  # a group is known by its id
        return hash(self.id)

    def __bool__(self) -> bool:
        return bool(self.id or self.results)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.id, self.results, None, self.parent)

    def __str__(self) -> str:
        return str(self.id)

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(str(r.id) for r in self.results)}]>"

    def as_tuple(self) -> tuple[Any, list[Any]]:
        parent = self.parent
        return (self.id, parent.as_tuple() if parent is not None else None), [r.as_tuple() for r in self.results]

    def forget(self) -> None:
        super().forget()
        if self.id:
            self.backend.delete_group(self.id)

    def save(self, backend: Any = None) -> "GroupResult":
        """Store the member ids so that `GroupResult.restore(id)` works in any process."""
        if self.id is None:
            raise ValueError("a GroupResult needs an id to be saved")
        (backend or self.backend).save_group(self.id, self)
        return self

    @classmethod
    def restore(cls, id: str, backend: Any = None, app: "Celeriac | None" = None) -> "GroupResult | None":  # noqa: A002
        """The group saved under `id`, or None."""
        from .app import current_app
        app = app or current_app()
        children = (backend or app.backend).saved_group_members(id)
        if children is None:
            return None
        return cls(id, [result_from_child(c, app) for c in children], app=app)

    def delete(self, backend: Any = None) -> None:
        if self.id:
            (backend or self.backend).delete_group(self.id)

