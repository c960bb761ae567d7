"""Celery's `celery.utils` paths that projects import: `celeriac.utils.log`, `celeriac.utils.time`
and `uuid()`."""

from __future__ import annotations

import uuid as _uuid


def uuid() -> str:
    """A new task id (a random UUID as text), as Celery's `celery.utils.uuid()`."""
    return str(_uuid.uuid4())


__all__ = ["uuid"]
