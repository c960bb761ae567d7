"""`from celeriac.app.task import Task` - Celery's module path for the task base class."""

from __future__ import annotations

from ..task import Context, Task

__all__ = ["Context", "Task"]
