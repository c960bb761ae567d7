"""Tasks every app has, used by workflows (named as in Celery, so messages interoperate)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Celeriac


def register_builtins(app: "Celeriac") -> None:
    from .canvas import signature

    def accumulate(*args: Any, **kwargs: Any) -> Any:
        """Return its arguments (or the one at `index`): the single result of a nested group."""
        index = kwargs.get("index")
        return args[index] if index is not None else args

    def xmap(task: dict[str, Any], it: list[Any]) -> list[Any]:
        """Call `task` with each item, in this worker, in order."""
        fn = signature(task, app=app).type
        return [fn(item) for item in it]

    def xstarmap(task: dict[str, Any], it: list[Any]) -> list[Any]:
        """Call `task(*item)` for each item, in this worker, in order."""
        fn = signature(task, app=app).type
        return [fn(*item) for item in it]

    for name, fn in (("celery.accumulate", accumulate), ("celery.map", xmap), ("celery.starmap", xstarmap)):
        if name not in app.tasks:
            app._create_task(fn, {"name": name, "builtin": True})
