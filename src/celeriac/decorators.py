"""The tutorial's decorator style: `from celeriac.decorators import task, retry`.

    @app.task(bind=True)
    @retry(max_retries=3, countdown=[5, 10, 15], on_retry=log_retry)
    def my_task(self, a, b): ...

`retry` sets the running task's retry policy: every retry of this run, whether the body
calls `raise self.retry(exc=exc)` itself or the decorator catches one of `exceptions`,
waits the delay for this attempt (a list gives one delay per attempt; the last one
repeats), counts against `max_retries` and calls `on_retry(request, exc=exc)` first.
Once `max_retries` is used up the original exception fails the task.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Any, Callable, Iterator, ParamSpec, Sequence, TypeVar

from .app import current_app
from .exceptions import Retry
from .task import RetryPolicy, Task, current_task_and_request

P = ParamSpec("P")
R = TypeVar("R")


def task(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """`@task` / `@task(**options)` on the current app (the app your project created)."""
    app = current_app()
    if fn is not None and callable(fn) and not options:
        return app.task(fn)
    return app.task(**options)


def retry(max_retries: int | None = 3, countdown: float | Sequence[float] | None = None,
          on_retry: Callable[..., Any] | None = None,
          exceptions: tuple[type[BaseException], ...] = (Exception,)) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Set the running task's retry policy, and retry it when the function raises one of `exceptions`.

    The policy goes on the request, so a body that calls `raise self.retry(exc=exc)` itself
    (the tutorial's form) gets this decorator's countdown, max_retries and on_retry too.
    """
    policy = RetryPolicy(max_retries=max_retries, countdown=countdown, on_retry=on_retry)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with _policy_of_running_task(policy) as running:
                    try:
                        return await fn(*args, **kwargs)
                    except Retry:
                        raise
                    except exceptions as exc:
                        if running is None:
                            raise  # called as a plain function: there is nothing to retry
                        running.retry(exc=exc)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with _policy_of_running_task(policy) as running:
                try:
                    return fn(*args, **kwargs)
                except Retry:
                    raise
                except exceptions as exc:
                    if running is None:
                        raise
                    running.retry(exc=exc)

        return wrapper

    return decorate


@contextlib.contextmanager
def _policy_of_running_task(policy: RetryPolicy) -> Iterator[Task[Any, Any] | None]:
    """Give the running task's request this retry policy while the function runs."""
    current = current_task_and_request()
    if current is None or current[1].called_directly:
        yield None
        return
    request = current[1]
    previous = request.retry_policy
    request.retry_policy = policy
    try:
        yield current[0]
    finally:
        request.retry_policy = previous


__all__ = ["task", "retry"]
