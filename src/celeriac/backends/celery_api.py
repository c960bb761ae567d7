"""Celery's result-backend methods, on every result store.

Celery code calls `app.backend` directly: `get_task_meta(id)` in web views that poll a
task, `store_result(id, meta, state="PROGRESS")` from outside a task, `mark_as_failure`,
`ensure_chords_allowed()` before building a chord, `forget(id)`. These are written once,
here, on top of the store interface (`get`, `store`, `forget`), so every store has them.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .. import protocol, states
from ..exceptions import TaskRevokedError, TimeoutError

if TYPE_CHECKING:
    from ..app import Celeriac
    from ..result import AsyncResult, GroupResult
    from .base import StoredResult


def group_key(group_id: str) -> str:
    return f"celeriac-group-{group_id}"


def as_id_list(task_ids: str | Sequence[str]) -> Sequence[str]:
    """Celery passes one id where celeriac passes many: accept both."""
    return [task_ids] if isinstance(task_ids, str) else task_ids


class CeleryBackendAPI:
    """Mixed into ResultStore: Celery's names, Celery's return shapes."""

    #: The app this store serves (set by `app.backend`); needed to build results and metas.
    app: "Celeriac | None" = None

    # What the store interface provides (see base.ResultStore).
    get: Callable[[str], "dict[str, Any] | None"]
    store: Callable[[Sequence["StoredResult"]], None]
    encode: Callable[[dict[str, Any]], "StoredResult"]
    forget: Callable[[Sequence[str]], None]
    wait: Callable[[str, float], "dict[str, Any] | None"]
    url: str

    READY_STATES = states.READY_STATES
    EXCEPTION_STATES = states.EXCEPTION_STATES
    PROPAGATE_STATES = states.PROPAGATE_STATES
    UNREADY_STATES = states.UNREADY_STATES

    def ensure_chords_allowed(self) -> None:
        """Every celeriac store counts chords atomically: chords are always allowed."""

    def as_uri(self, include_password: bool = False) -> str:
        from ..brokers.base import safe_url
        return self.url if include_password else safe_url(self.url)

    # --- reading ---

    def get_task_meta(self, task_id: str, cache: bool = True) -> dict[str, Any]:
        """The stored meta, with a failure's `result` as the exception (as Celery returns it);
        `{"status": "PENDING", "result": None, ...}` for an unknown id."""
        meta = self.get(task_id)
        if meta is None:
            return {"task_id": task_id, "status": states.PENDING, "result": None, "traceback": None,
                    "children": [], "date_done": None}
        meta = dict(meta)
        if meta.get("status") in states.EXCEPTION_STATES and isinstance(meta.get("result"), dict):
            meta["result"] = protocol.exception_from_dict(meta["result"])
        if isinstance(meta.get("date_done"), str):  # a datetime, as Celery 5's JSON gives it back
            meta["date_done"] = datetime.fromisoformat(meta["date_done"])
        return meta

    def get_state(self, task_id: str) -> str:
        return str(self.get_task_meta(task_id)["status"])

    get_status = get_state

    def get_result(self, task_id: str) -> Any:
        """The return value, or the exception of a failure."""
        return self.get_task_meta(task_id).get("result")

    def get_traceback(self, task_id: str) -> str | None:
        return self.get_task_meta(task_id).get("traceback")

    def get_children(self, task_id: str) -> list[Any] | None:
        """The stored child entries (task ids, and {"group": id, "results": [...]} for groups)."""
        return self.get_task_meta(task_id).get("children")

    def task_result_exists(self, task_id: str) -> bool:
        return self.get(task_id) is not None

    def wait_for(self, task_id: str, timeout: float | None = None, interval: float = 0.5,
                 no_ack: bool = True, on_interval: Callable[[], Any] | None = None) -> dict[str, Any]:
        """Wait until the task is ready; its meta. TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = interval if deadline is None else min(interval, max(0.0, deadline - time.monotonic()))
            meta = self.wait(task_id, remaining)
            if meta is not None and meta.get("status") in states.READY_STATES:
                return self.get_task_meta(task_id)
            if on_interval is not None:
                on_interval()
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"task {task_id} is not ready after {timeout}s")

    def wait_for_pending(self, result: "AsyncResult[Any]", timeout: float | None = None, interval: float = 0.5,
                         propagate: bool = True, **_ignored: Any) -> Any:
        return result.get(timeout=timeout, interval=interval, propagate=propagate, disable_sync_subtasks=False)

    # --- writing ---

    def store_result(self, task_id: str, result: Any, state: str, traceback: str | None = None,
                     request: Any = None, **_ignored: Any) -> Any:
        """Write a state (a final state is never replaced by an in-flight one); returns `result`."""
        if self.app is not None:
            meta = self.app.result_meta(task_id, state, result, traceback=traceback, request=request)
        else:
            value = protocol.exception_to_dict(result) if isinstance(result, BaseException) else result
            meta = {"task_id": task_id, "status": state, "result": value, "traceback": traceback,
                    "children": [], "date_done": None}
        self.store([self.encode(meta)])
        return result

    def mark_as_started(self, task_id: str, **meta: Any) -> Any:
        return self.store_result(task_id, meta, states.STARTED)

    def mark_as_done(self, task_id: str, result: Any, request: Any = None, store_result: bool = True,
                     state: str = states.SUCCESS) -> None:
        if store_result:
            self.store_result(task_id, result, state, request=request)

    def mark_as_failure(self, task_id: str, exc: BaseException, traceback: str | None = None,
                        request: Any = None, store_result: bool = True, call_errbacks: bool = True,
                        state: str = states.FAILURE) -> None:
        """Store a failure. Error callbacks are not called from here: the worker calls them
        when a task fails; this only records the state."""
        if store_result:
            self.store_result(task_id, exc, state, traceback=traceback, request=request)

    def mark_as_revoked(self, task_id: str, reason: str = "", request: Any = None, store_result: bool = True,
                        state: str = states.REVOKED) -> None:
        """Store REVOKED (it does not stop the task: use `app.control.revoke` for that)."""
        if store_result:
            self.store_result(task_id, TaskRevokedError(reason), state, request=request)

    def mark_as_retry(self, task_id: str, exc: BaseException, traceback: str | None = None,
                      request: Any = None, store_result: bool = True, state: str = states.RETRY) -> None:
        if store_result:
            self.store_result(task_id, exc, state, traceback=traceback, request=request)

    # --- saved groups (GroupResult.save/restore) ---

    def save_group(self, group_id: str, result: "GroupResult | Sequence[Any]") -> Any:
        """Store a group's members (a GroupResult, or their child entries); returns `result`."""
        from ..result import child_entry
        members = getattr(result, "results", result)
        entries = [m if isinstance(m, (str, dict)) else child_entry(m) for m in members]
        meta = {"task_id": group_key(group_id), "status": states.SUCCESS, "result": entries,
                "date_done": None, "children": [], "name": "celeriac.group"}
        self.store([self.encode(meta)])
        return result

    def saved_group_members(self, group_id: str) -> list[Any] | None:
        """The child entries saved for a group, or None."""
        meta = self.get(group_key(group_id))
        return None if meta is None else list(meta.get("result") or [])

    def restore_group(self, group_id: str, cache: bool = True) -> "GroupResult | None":
        """The GroupResult saved under `group_id`, or None (Celery's return value)."""
        from ..app import current_app
        from ..result import GroupResult
        return GroupResult.restore(group_id, backend=self, app=self.app or current_app())

    def delete_group(self, group_id: str) -> None:
        self.forget([group_key(group_id)])

    forget_group = delete_group
