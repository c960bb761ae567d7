"""celeriac: a distributed task queue for Python with Celery's API.

    from celeriac import Celeriac
    app = Celeriac("my_app")          # embedded SQLite broker and results, no server

    @app.task
    def add(x, y): return x + y
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import states  # noqa: E402
from .app import Celeriac, Celery, current_app, shared_task  # noqa: E402
from .canvas import (Signature, chain, chord, chunks, group, maybe_signature, signature,  # noqa: E402
                     subtask, xmap, xstarmap)
from .result import AsyncResult, EagerResult, GroupResult  # noqa: E402
from .task import CurrentTaskProxy, Task  # noqa: E402
from .utils import uuid  # noqa: E402 - Celery's `from celery import uuid`

current_task = CurrentTaskProxy()  # Celery's `from celery import current_task`

__all__ = [
    "AsyncResult", "Celeriac", "Celery", "EagerResult", "GroupResult", "Signature", "Task", "chain", "chord",
    "chunks", "current_app", "current_task", "group", "maybe_signature", "shared_task", "signature", "states",
    "subtask", "uuid", "xmap", "xstarmap", "__version__",
]
