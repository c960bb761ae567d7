"""`from celeriac.app.base import Celery` - Celery's module path for the app class."""

from __future__ import annotations

from . import Celeriac, Celery

__all__ = ["Celeriac", "Celery"]
