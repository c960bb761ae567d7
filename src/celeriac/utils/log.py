"""`from celeriac.utils.log import get_task_logger` - Celery's module path for the loggers.

The loggers themselves live in `celeriac.log`; this module gives them Celery's address.
"""

from __future__ import annotations

import logging

from ..log import TASK_LOGGER, get_logger, get_task_logger

base_logger = logger = logging.getLogger("celeriac")
task_logger = logging.getLogger(TASK_LOGGER)
worker_logger = logging.getLogger("celeriac.worker")


def mlevel(level: int | str) -> int:
    """A level name ("info", "WARNING") or number as the number `logging` uses."""
    if isinstance(level, int):
        return level
    value = logging.getLevelName(str(level).upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value


__all__ = ["get_logger", "get_task_logger", "mlevel", "base_logger", "logger", "task_logger", "worker_logger"]
