"""Logging helpers: `get_task_logger(__name__)` adds the task name and id to each record."""

from __future__ import annotations

import logging
from typing import Any

from .task import current_task_and_request


class _TaskFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        current = current_task_and_request()
        record.task_name = current[0].name if current else "???"
        record.task_id = current[1].id if current else "???"
        return True


def get_task_logger(name: str) -> logging.Logger:
    """A logger for task modules; records carry `task_name` and `task_id`."""
    logger = logging.getLogger(f"celeriac.task.{name}")
    if not any(isinstance(f, _TaskFilter) for f in logger.filters):
        logger.addFilter(_TaskFilter())
    return logger


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def setup_worker_logging(loglevel: str | int, fmt: str, **_: Any) -> None:
    level = loglevel if isinstance(loglevel, int) else logging.getLevelName(str(loglevel).upper())
    if not isinstance(level, int):
        level = logging.INFO
    root = logging.getLogger()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(fmt))
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("pika").setLevel(max(level, logging.WARNING))  # one INFO line per channel otherwise
