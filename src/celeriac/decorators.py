"""The tutorial's decorator style: `from celeriac.decorators import task, retry`.

    @app.task(bind=True)
    @retry(max_retries=3, countdown=[5, 10, 15], on_retry=log_retry)
    def my_task(self, a, b): ...

`retry` catches the listed exceptions, calls `on_retry(request, exc=exc)` and retries the
running task with the delay for this attempt (a list gives one delay per attempt; the
last one repeats). Once `max_retries` is used up the original exception fails the task.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, ParamSpec, Sequence, TypeVar

from .app import current_app
from .exceptions import Retry
from .task import Context, current_task

P = ParamSpec("P")
R = TypeVar("R")


def task(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """`@task` / `@task(**options)` on the current app (the app your project created)."""
    app = current_app()
    if fn is not None and callable(fn) and not options:
        return app.task(fn)
    return app.task(**options)


def _delay_for(countdown: float | Sequence[float] | None, attempt: int) -> float | None:
    if countdown is None or isinstance(countdown, (int, float)):
        return countdown
    delays = list(countdown)
    if not delays:
        return None
    return float(delays[min(attempt, len(delays) - 1)])


def retry(max_retries: int | None = 3, countdown: float | Sequence[float] | None = None,
          on_retry: Callable[..., Any] | None = None,
          exceptions: tuple[type[BaseException], ...] = (Exception,)) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Retry the task when the function raises one of `exceptions`."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        def retry_now(exc: BaseException) -> None:
            running = current_task()
            if running is None:
                raise exc  # called as a plain function: there is nothing to retry
            request: Context = running.request
            limit = running.max_retries if max_retries is None else max_retries  # None: the task's own
            if on_retry is not None and (limit is None or request.retries < limit):
                on_retry(request, exc=exc)
            running.retry(exc=exc, countdown=_delay_for(countdown, request.retries), max_retries=max_retries)

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await fn(*args, **kwargs)  # type: ignore[misc]
                except Retry:
                    raise
                except exceptions as exc:
                    retry_now(exc)
                    raise

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except Retry:
                raise
            except exceptions as exc:
                retry_now(exc)
                raise

        return wrapper

    return decorate


__all__ = ["task", "retry"]
