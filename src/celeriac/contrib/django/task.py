"""`celeriac.contrib.django.task.DjangoTask`, where Celery projects import it from.

In celeriac every task has `delay_on_commit()` and `apply_async_on_commit()`, so this
class adds nothing: it exists so that `base=DjangoTask` and `task_cls=DjangoTask` keep
working after the rename.
"""

from __future__ import annotations

from typing import ParamSpec, TypeVar

from ...task import Task

P = ParamSpec("P")
R = TypeVar("R")


class DjangoTask(Task[P, R]):
    """A Task; `delay_on_commit()` / `apply_async_on_commit()` come from Task itself."""


__all__ = ["DjangoTask"]
