"""`from celeriac.app.control import Control, Inspect` - Celery's module path for remote control."""

from __future__ import annotations

from ..control import Control, Inspect

__all__ = ["Control", "Inspect"]
