"""Task: what `@app.task` makes. Calling, retrying, handlers and the request context."""

from __future__ import annotations

import contextvars
import random
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Generic, NoReturn, ParamSpec, Sequence, TypeVar

from . import protocol, states
from .exceptions import MaxRetriesExceededError, Retry

if TYPE_CHECKING:
    from .app import Celeriac
    from .canvas import Signature, chunks
    from .protocol import ExceptionInfo
    from .result import AsyncResult, EagerResult

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class RetryPolicy:
    """How the running task retries when its body calls `self.retry()` without a countdown,
    eta or max_retries: set by `@celeriac.decorators.retry(...)` on the request it runs in."""

    max_retries: int | None = None  # None: the task's own max_retries
    countdown: float | Sequence[float] | None = None  # a list: one delay per attempt, the last repeats
    on_retry: Callable[..., Any] | None = None  # on_retry(request, exc=exc) before each retry is sent

    def delay_for(self, retries: int) -> float | None:
        """The delay before retry number `retries + 1`."""
        if self.countdown is None or isinstance(self.countdown, (int, float)):
            return self.countdown
        delays = list(self.countdown)
        return float(delays[min(retries, len(delays) - 1)]) if delays else None


class Context:
    """The request of the running task (`self.request` in a bound task), with Celery's names.

    `timelimit` is the message's `(hard, soft)` pair as Celery's protocol has it;
    `time_limit` / `soft_time_limit` are its two halves (None when the message set none: the
    task's own limits or the worker's settings apply then). `headers` holds only the custom
    headers (not the protocol's own keys), or None when there are none, as in Celery.
    `delivery_info` is `{exchange, routing_key, priority, redelivered}`.
    """

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
    shadow: str | None = None
    timelimit: tuple[float | None, float | None] = (None, None)
    time_limit: float | None = None
    soft_time_limit: float | None = None
    callbacks: Any = None
    errbacks: Any = None
    chain: Any = None
    chord: Any = None
    ignore_result: bool = False
    delivery_info: dict[str, Any] = {}
    headers: dict[str, Any] | None = None
    properties: dict[str, Any] = {}
    replaced_task_nesting: int = 0
    stamped_headers: list[str] | None = None  # canvas stamping: the names of the stamps
    stamps: dict[str, Any] | None = None  # canvas stamping: {name: value}
    logfile: str | None = None
    loglevel: int | None = None
    utc: bool | None = None
    replaced_by: Any = None
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    retry_policy: RetryPolicy | None = None
    date_started: str | None = None  # ISO time this run began (stored with result_extended)
    lock_key: str | None = None  # the task lock this run holds (worker/locks.py)
    received_at: float | None = None  # epoch seconds the worker took the message / started the task
    started_at: float | None = None
    body: bytes | None = None  # the message body as received ([args, kwargs, embed] as JSON), for the history

    def __init__(self, **fields: Any) -> None:
        self.children: list[Any] = []
        self.__dict__.update(fields)
        if "timelimit" in fields:  # Celery's order: (hard, soft)
            hard, soft = (list(fields["timelimit"] or ()) + [None, None])[:2]
            self.__dict__.setdefault("time_limit", hard)
            self.__dict__.setdefault("soft_time_limit", soft)

    @property
    def taskset(self) -> str | None:
        """Celery's old name for `group`."""
        return self.group

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    @property
    def name(self) -> str | None:
        """The task's name, as on Celery's worker Request (the `task_received` signal's `request`)."""
        return self.task

    task_name = name

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
    throws: tuple[type[BaseException], ...] = ()  # expected errors: FAILURE, logged in one line without traceback
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
    lock: bool | str | Callable[[tuple[Any, ...], dict[str, Any]], str] | None = None  # one run at a time
    lock_timeout: float | None = None  # seconds a lock is held at most (default: an hour)
    unique_for: float | None = None  # seconds: the same call again returns this one while it is pending
    unique_key: Callable[[tuple[Any, ...], dict[str, Any]], str] | str | None = None  # key, or (args, kwargs) -> key

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
        if self.app.conf._data["task_always_eager"]:
            return self.apply(args, kwargs, task_id=task_id, link=link, link_error=link_error,
                              headers=headers, ignore_result=ignore_result, **options)
        if (not options and task_id is None and countdown is None and eta is None and expires is None
                and priority is None and queue is None and link is None and link_error is None
                and headers is None and ignore_result is None and serializer is None):
            result = self.app.send_plain(self, args, kwargs)  # the usual call: from a template
        else:
            result = self.app.send_task(
                self.name, args, kwargs, task_id=task_id, countdown=countdown, eta=eta,
                expires=expires if expires is not None else self.expires,
                priority=priority, queue=queue, link=link, link_error=link_error, headers=headers,
                ignore_result=ignore_result, serializer=serializer, _task=self, **options)
        if type(self).AsyncResult is not Task.AsyncResult:  # a task type with its own result class
            return self.AsyncResult(result.id)
        return result

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> "AsyncResult[R]":
        """`delay()` for asyncio code: never blocks the event loop (docs/asyncio.md)."""
        return await self.aapply_async(args, kwargs)

    async def aapply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> "AsyncResult[R]":
        """`apply_async()` for asyncio code: the same options, the same message, published on
        the loop's asyncio client."""
        from .aio import client
        return await client.call(self.app, lambda: self.apply_async(args, kwargs, **options))

    def apply(self, args: Any = None, kwargs: Any = None, *, task_id: str | None = None,
              retries: int = 0, throw: bool | None = None, **options: Any) -> "EagerResult[R]":
        """Run the task in this process, now, with retries and handlers; returns an EagerResult."""
        from .execution import apply_eagerly
        return apply_eagerly(self, tuple(args or ()), dict(kwargs or {}), task_id=task_id or protocol.new_id(),
                             retries=retries, throw=throw, options=options)

    def delay_on_commit(self, *args: P.args, **kwargs: P.kwargs) -> "AsyncResult[R]":
        """`delay()` once the current Django transaction commits; nothing is sent if it rolls back.
        Returns the AsyncResult the task will have (Celery returns None)."""
        return self.apply_async_on_commit(args, kwargs)

    def apply_async_on_commit(self, args: Any = None, kwargs: Any = None, *, using: str | None = None,
                              **options: Any) -> "AsyncResult[R]":
        """`apply_async()` once the current Django transaction (of database `using`) commits;
        nothing is sent if it rolls back. The id is chosen now, so it can be saved in that
        transaction; it stays PENDING for good if the transaction rolls back."""
        from .contrib.django import on_commit
        task_id = options.pop("task_id", None) or protocol.new_id()
        on_commit(lambda: self.apply_async(args, kwargs, task_id=task_id, **options), using=using)
        return self.AsyncResult(task_id)

    # --- signatures ---

    def s(self, *args: Any, **kwargs: Any) -> "Signature":
        """A signature of a call to this task: `add.s(2, 2)`; in a chain, the parent's result goes first."""
        signature: Signature = _signature_class()(self, args, kwargs)
        return signature

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
        from .canvas import signature
        from .canvas.callbacks import replacement_signature
        request = self.request
        eager = request.called_directly or request.is_eager
        self.on_replace(signature(sig, app=self.app) if eager else replacement_signature(self.app, sig, request))
        raise RuntimeError(f"{type(self).__name__}.on_replace() returned: it must end with "
                           "`return super().on_replace(sig)`, which puts the replacement in place")

    def on_replace(self, sig: Any) -> NoReturn:
        """Handler called by replace() with the replacement, already holding this task's id and
        callbacks (Celery 5.3's hook: e.g. stamp it). An override must end with
        ``return super().on_replace(sig)``."""
        from .canvas.callbacks import placed_replacement_messages
        from .exceptions import Replaced
        request = self.request
        if request.called_directly or request.is_eager:
            raise Replaced(sig.apply().get())  # on_replace was handed a Signature already
        request.replaced_by = _nested(placed_replacement_messages(self.app, sig, request),
                                      request.replaced_task_nesting + 1)
        raise Replaced()

    def add_to_chord(self, sig: Any, lazy: bool = False) -> Any:
        """Add `sig` to the chord this task is a header member of: the body waits for it too and
        gets its result after the header's. Sends it (returns its result), or with `lazy`,
        returns the signature for you to send: the chord waits until you do."""
        from .canvas.callbacks import add_to_chord
        return add_to_chord(self, sig, lazy)

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
        """Retry this task later (state RETRY); raises Retry, or `exc` when retries are used up.

        What the call leaves open (countdown/eta, max_retries) comes from the request's
        `retry_policy` (the `@retry` decorator's) when there is one, else from the task."""
        request = self.request
        if request.called_directly:
            # Called as a plain function: nothing to retry, so the error surfaces here.
            if exc is not None:
                raise exc
            raise Retry("Task can be retried", None)
        policy = request.retry_policy
        if policy is not None:
            max_retries = policy.max_retries if max_retries is None else max_retries
            if eta is None and countdown is None:
                countdown = policy.delay_for(request.retries)
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args} kwargs:{request.kwargs}",
                task_args=request.args, task_kwargs=request.kwargs)
        if eta is None and countdown is None:
            countdown = self.default_retry_delay
        if policy is not None and policy.on_retry is not None:
            policy.on_retry(request, exc=exc)
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


def _nested(messages: list[Any], depth: int) -> list[Any]:
    """The replacement's messages carry how deep in replacements they are (`request.replaced_task_nesting`)."""
    from dataclasses import replace
    from .protocol import pack, unpack
    out = []
    for outgoing in messages:
        msg = unpack(outgoing.payload)
        msg.headers["replaced_task_nesting"] = depth
        out.append(replace(outgoing, payload=pack(msg), message=msg))
    return out


_signature_type: list[Any] = []


def _signature_class() -> Any:
    """canvas.Signature, imported once: `add.s(i)` is called thousands of times to build a
    group, and an import statement in a function costs a lookup each time (canvas imports
    this module, so it cannot be imported at the top)."""
    if not _signature_type:
        from .canvas.signature import Signature
        _signature_type.append(Signature)
    return _signature_type[0]


def current_task() -> Task[Any, Any] | None:
    current = _current.get()
    return current[0] if current else None


TaskFunction = Callable[..., Any]


get_current_task = current_task


class CurrentTaskProxy:
    """`from celeriac import current_task`: stands for the task running here (falsy when none),
    as Celery's proxy does: `if current_task: current_task.update_state(...)`."""

    def _get(self) -> Task[Any, Any]:
        running = current_task()
        if running is None:
            raise RuntimeError("no task is running here: current_task is only set inside a running task "
                               "(check `if current_task:` first)")
        return running

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def __bool__(self) -> bool:
        return current_task() is not None

    def __eq__(self, other: object) -> bool:
        return current_task() is other or current_task() == other

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        running = current_task()
        return f"<current_task: {running!r}>"
