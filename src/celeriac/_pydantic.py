"""`@app.task(pydantic=True)`, with Celery 5.5's meaning.

Arguments whose parameter is annotated with a pydantic model (or `Model | None`) are
validated into that model before the function runs, so a client may send plain dicts; a
returned model whose class matches the return annotation is stored as its `model_dump()`
(JSON mode by default). Invalid input raises pydantic's `ValidationError` in the worker,
so the task ends FAILURE with it. pydantic is an optional dependency: the extra `pydantic`.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from typing import Any, Callable

from ._options import warn_at_caller
from .exceptions import ImproperlyConfigured

PYDANTIC_OPTIONS = ("pydantic", "pydantic_strict", "pydantic_context", "pydantic_dump_kwargs")


def _model_class(annotation: Any, base: type) -> Any:
    """The model class an annotation names (`Model`, `Model | None`, `Optional[Model]`), or None."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) != 1:
            return None
        annotation = members[0]
    if inspect.isclass(annotation) and issubclass(annotation, base):
        return annotation
    return None


def _hints(fn: Callable[..., Any], task_name: str) -> dict[str, Any]:
    try:  # resolves string annotations (`from __future__ import annotations`)
        return typing.get_type_hints(fn)
    except Exception as exc:  # noqa: BLE001 - e.g. a model defined inside a function
        warn_at_caller(f"task {task_name}: pydantic=True cannot resolve its annotations ({exc}); arguments "
                       "are passed unvalidated. Define the models at module level.")
        return {}


def pydantic_task_function(fn: Callable[..., Any], task_name: str, app: Any, *, strict: bool = False,
                           context: dict[str, Any] | None = None,
                           dump_kwargs: dict[str, Any] | None = None) -> Callable[..., Any]:
    """Wrap a task function so its model arguments are validated and a returned model is dumped."""
    try:
        from pydantic import BaseModel
    except ModuleNotFoundError:
        raise ImproperlyConfigured(f"task {task_name} uses pydantic=True, but pydantic is not installed: "
                                   "pip install 'celeriac[pydantic]'") from None
    signature = inspect.signature(fn)
    hints = _hints(fn, task_name)
    models: dict[str, type[BaseModel]] = {
        name: model for name in signature.parameters
        if (model := _model_class(hints.get(name), BaseModel)) is not None}
    returns: type[BaseModel] | None = _model_class(hints.get("return"), BaseModel)
    dump = {"mode": "json", **(dump_kwargs or {})}
    validation_context = {**(context or {}), "celery_app": app, "celery_task_name": task_name}

    def convert_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments:
        bound = signature.bind(*args, **kwargs)
        for name, model in models.items():
            value = bound.arguments.get(name)
            if name in bound.arguments and value is not None and not isinstance(value, model):
                bound.arguments[name] = model.model_validate(value, strict=strict, context=validation_context)
        return bound

    def convert_result(value: Any) -> Any:
        if returns is not None and isinstance(value, returns):
            return value.model_dump(**dump)
        return value

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = convert_arguments(args, kwargs)
            return convert_result(await fn(*bound.args, **bound.kwargs))

        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = convert_arguments(args, kwargs)
        return convert_result(fn(*bound.args, **bound.kwargs))

    return wrapper
