"""Task: what `@app.task` makes. Calling, retrying, handlers and the request context."""

from __future__ import annotations

import contextvars
import random
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Generic, NoReturn, ParamSpec, TypeVar

from . import states
from .exceptions import MaxRetriesExceededError, Retry

if TYPE_CHECKING:
    from .app import Celeriac
    from .canvas import Signature, chunks
    from .protocol import ExceptionInfo
    from .result import AsyncResult, EagerResult

P = ParamSpec("P")
R = TypeVar("R")


class Context:
    """The request of the running task (`self.request` in a bound task)."""

    id: str | None = None
    task: str | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    retries: int = 0
    is_eager: bool = False
    called_directly: bool = True
    eta: str | None = None
    expires: str | None = None
    hostname: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    origin: str | None = None
    timelimit: tuple[float | None, float | None] = (None, None)
    callbacks: Any = None
    errbacks: Any = None
    chain: Any = None
    chord: Any = None
    ignore_result: bool = False
    delivery_info: dict[str, Any] = {}
    headers: dict[str, Any] | None = None
    properties: dict[str, Any] = {}
    replaced_by: Any = None
    received_at: float | None = None  # epoch seconds the worker took the message / started the task
    started_at: float | None = None
    body: bytes | None = None  # the message body as received ([args, kwargs, embed] as JSON), for the history

    def __init__(self, **fields: Any) -> None:
        self.children: list[Any] = []
        self.__dict__.update(fields)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in dir(self) if not k.startswith("_")
                and not callable(getattr(self, k))}

    def __repr__(self) -> str:
        return f"<Context {self.task}[{self.id}] retries={self.retries}>"


_DEFAULT_CONTEXT = Context()
# (task, request) of the task running in this thread / asyncio task; a ContextVar so that
# many async tasks on one event loop each see their own request.
_current: contextvars.ContextVar[tuple["Task[Any, Any]", Context] | None] = contextvars.ContextVar(
    "celeriac_current_task", default=None)


def current_task_and_request() -> tuple["Task[Any, Any]", Context] | None:
    return _current.get()


class Task(Generic[P, R]):
    """A task type; `@app.task` makes a subclass around your function and one instance."""

    name: str = ""
    app: "Celeriac"
    typing: bool = True
    is_async: bool = False
    max_retries: int | None = 3
    default_retry_delay: float = 180
    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: dict[str, Any] = {}
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600
    retry_jitter: bool = True
    rate_limit: str | None = None
    rate_limit_scope: str | None = None  # "worker" (each worker on its own) or "global" (all together)
    time_limit: float | None = None
    soft_time_limit: float | None = None
    ignore_result: bool | None = None
    store_errors_even_if_ignored: bool = False
    track_started: bool | None = None
    acks_late: bool | None = None
    reject_on_worker_lost: bool | None = None
    priority: int | None = None
    queue: str | None = None
    serializer: str | None = None
    expires: float | datetime | None = None
    builtin: bool = False  # celeriac's own workflow helpers (celery.map, ...)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"task {self.name!r} has no run() method")

    # --- calling ---

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here and now, like a plain call."""
        return self.run(*args, **kwargs)  # type: ignore[no-any-return]

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> "AsyncResult[R]":
        """Send the task to a worker; a shortcut for `apply_async(args, kwargs)`."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Any = None, kwargs: Any = None, *, task_id: str | None = None,
                    countdown: float | None = None, eta: datetime | None = None,
                    expires: float | datetime | None = None, priority: int | None = None,
                    queue: str | None = None, link: Any = None, link_error: Any = None,
                    headers: dict[str, Any] | None = None, ignore_result: bool | None = None,
                    serializer: str | None = None, **options: Any) -> "AsyncResult[R]":
        """Send the task with options; returns its AsyncResult."""
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, task_id=task_id, link=link, link_error=link_error,
                              headers=headers, ignore_result=ignore_result, **options)
        return self.app.send_task(
            self.name, args, kwargs, task_id=task_id, countdown=countdown, eta=eta,
            expires=expires if expires is not None else self.expires,
            priority=priority, queue=queue, link=link, link_error=link_error, headers=headers,
            ignore_result=ignore_result, serializer=serializer, _task=self, **options)

    def apply(self, args: Any = None, kwargs: Any = None, *, task_id: str | None = None,
              retries: int = 0, throw: bool | None = None, **options: Any) -> "EagerResult[R]":
        """Run the task in this process, now, with retries and handlers; returns an EagerResult."""
        from .worker.execute import apply_eagerly
        return apply_eagerly(self, tuple(args or ()), dict(kwargs or {}), task_id=task_id or str(uuid.uuid4()),
                             retries=retries, throw=throw, options=options)

    # --- signatures ---

    def s(self, *args: Any, **kwargs: Any) -> "Signature":
        """A signature of a call to this task: `add.s(2, 2)`; in a chain, the parent's result goes first."""
        from .canvas import Signature
        return Signature(self, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> "Signature":
        """An immutable signature: it ignores the result of the task before it."""
        from .canvas import Signature
        return Signature(self, args, kwargs, immutable=True)

    def signature(self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any) -> "Signature":
        """A signature with options: `add.signature((2, 2), countdown=10)`."""
        from .canvas import Signature
        immutable = bool(options.pop("immutable", False))
        return Signature(self, args, kwargs, options, immutable=immutable)

    subtask = signature

    def map(self, it: Any) -> "Signature":
        """One task that calls this one with each item in turn: `square.map([1, 2, 3])`."""
        from .canvas import xmap
        return xmap(self.s(), it, app=self.app)

    def starmap(self, it: Any) -> "Signature":
        """One task that calls `self(*item)` for each item: `add.starmap([(1, 2), (3, 4)])`."""
        from .canvas import xstarmap
        return xstarmap(self.s(), it, app=self.app)

    def chunks(self, it: Any, n: int) -> "chunks":
        """Split calls into parts of `n` calls, one message each: `add.chunks(zip(a, b), 10)`."""
        from .canvas import chunks
        return chunks(self.s(), it, n, app=self.app)

    def replace(self, sig: Any) -> NoReturn:
        """End this task and put `sig` in its place: its result becomes this task's result, and
        whatever was to run after this task (chain, chord, callbacks) runs after it."""
        from .canvas import replacement_messages, signature
        from .exceptions import Replaced
        request = self.request
        if request.called_directly or request.is_eager:
            raise Replaced(signature(sig, app=self.app).apply().get())
        request.replaced_by = replacement_messages(self.app, sig, request)
        raise Replaced()

    def AsyncResult(self, task_id: str) -> "AsyncResult[R]":  # noqa: N802 - Celery's name
        from .result import AsyncResult
        return AsyncResult(task_id, app=self.app, task_name=self.name)

    # --- the request ---

    @property
    def request(self) -> Context:
        current = _current.get()
        if current is not None and current[0] is self:
            return current[1]
        return _DEFAULT_CONTEXT

    def update_state(self, task_id: str | None = None, state: str | None = None,
                     meta: Any = None, **kwargs: Any) -> None:
        """Store a custom state (e.g. PROGRESS) that clients see while the task runs."""
        task_id = task_id or self.request.id
        if task_id is None:
            raise ValueError("update_state() outside a running task needs task_id=")
        self.app.store_state(task_id, state or states.PENDING, meta, request=self.request, task=self)

    # --- retrying ---

    def retry(self, args: Any = None, kwargs: Any = None, exc: BaseException | None = None,
              throw: bool = True, eta: datetime | None = None, countdown: float | None = None,
              max_retries: int | None = None, **options: Any) -> NoReturn:
        """Retry this task later (state RETRY); raises Retry, or `exc` when retries are used up."""
        request = self.request
        if request.called_directly:
            # Called as a plain function: nothing to retry, so the error surfaces here.
            if exc is not None:
                raise exc
            raise Retry("Task can be retried", None)
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args} kwargs:{request.kwargs}",
                task_args=request.args, task_kwargs=request.kwargs)
        if eta is None and countdown is None:
            countdown = self.default_retry_delay
        signal = Retry(exc=exc, when=eta or countdown)
        signal.retry_options = {  # type: ignore[attr-defined]
            "args": tuple(request.args if args is None else args),
            "kwargs": dict(request.kwargs if kwargs is None else kwargs),
            "eta": eta, "countdown": countdown, **options,
        }
        if not throw and not request.is_eager:
            self.app.send_retry(self, request, signal)
            signal.sent = True  # type: ignore[attr-defined]
            return signal  # type: ignore[misc]
        raise signal

    def backoff_countdown(self, retries: int) -> float:
        """Exponential backoff for autoretry: factor * 2**retries, capped, with full jitter."""
        factor = 1.0 if self.retry_backoff is True else float(self.retry_backoff)
        countdown = min(float(self.retry_backoff_max), factor * (2 ** retries))
        if self.retry_jitter:
            countdown = random.uniform(0, countdown)
        return float(max(0.0, countdown))

    # --- handlers (override in a Task subclass used as `base=`) ---

    def before_start(self, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Called in the worker before the task runs."""

    def on_success(self, retval: Any, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Called in the worker when the task returned."""

    def on_failure(self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                   einfo: "ExceptionInfo") -> None:
        """Called in the worker when the task raised (after retries are used up)."""

    def on_retry(self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                 einfo: "ExceptionInfo") -> None:
        """Called in the worker when the task is retried."""

    def after_return(self, status: str, retval: Any, task_id: str, args: tuple[Any, ...],
                     kwargs: dict[str, Any], einfo: "ExceptionInfo | None") -> None:
        """Called in the worker after the task finished, whatever its outcome."""

    def __repr__(self) -> str:
        return f"<@task: {self.name} of {getattr(self.app, 'main', None)}>"


class AsyncTask(Task[P, R]):
    """A task whose function is `async def`; the worker runs it on an event loop."""

    is_async = True

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:  # type: ignore[override]
        return self.run(*args, **kwargs)  # type: ignore[no-any-return]


def current_task() -> Task[Any, Any] | None:
    current = _current.get()
    return current[0] if current else None


TaskFunction = Callable[..., Any]
