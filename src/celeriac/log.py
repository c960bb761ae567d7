"""Logging helpers: `get_task_logger(__name__)` adds the task name and id to each record."""

from __future__ import annotations

import logging
from typing import Any

from . import signals
from .task import current_task_and_request

TASK_LOGGER = "celeriac.task"  # the parent of every get_task_logger() logger


class _TaskFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        current = current_task_and_request()
        record.task_name = current[0].name if current else "???"
        record.task_id = current[1].id if current else "???"
        return True


def get_task_logger(name: str) -> logging.Logger:
    """A logger for task modules; records carry `task_name` and `task_id`."""
    logger = logging.getLogger(f"{TASK_LOGGER}.{name}")
    if not any(isinstance(f, _TaskFilter) for f in logger.filters):
        logger.addFilter(_TaskFilter())
    return logger


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def setup_worker_logging(loglevel: str | int, fmt: str, *, hijack_root: bool | None = None,
                         logfile: str | None = None, nodename: str = "", **_: Any) -> None:
    """Configure logging for a worker or beat, as Celery does: a `setup_logging` receiver takes
    it over entirely; otherwise the root logger gets one handler (stderr, or `logfile` with
    Celery's %n/%I keys, see celeriac.daemon), and `after_setup_logger` /
    `after_setup_task_logger` receivers may then adjust the loggers."""
    level = loglevel if isinstance(loglevel, int) else logging.getLevelName(str(loglevel).upper())
    if not isinstance(level, int):
        level = logging.INFO
    options: dict[str, Any] = {"loglevel": level, "logfile": logfile, "format": fmt, "colorize": False}
    if signals.setup_logging.send(sender=None, **options):
        return  # the project configures logging itself (e.g. dictConfig(settings.LOGGING))
    if hijack_root is None:  # the setting of the app the command loaded (Celery's worker_hijack_root_logger)
        hijack_root = bool(_current_conf().get("worker_hijack_root_logger", True))
    root = logging.getLogger()
    handler: logging.Handler = logging.StreamHandler()
    if logfile:
        from . import daemon

        handler = daemon.log_handler(logfile, nodename)
        app_conf = _current_conf()
        if app_conf.get("worker_redirect_stdouts", True):
            daemon.redirect_stdouts_later(app_conf.get("worker_redirect_stdouts_level") or "WARNING")
    handler.setFormatter(logging.Formatter(fmt))
    if hijack_root:
        root.handlers[:] = [handler]
    elif not root.handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("pika").setLevel(max(level, logging.WARNING))  # one INFO line per channel otherwise
    signals.after_setup_logger.send(sender=None, logger=root, **options)
    task_logger = logging.getLogger(TASK_LOGGER)
    task_logger.setLevel(level)
    signals.after_setup_task_logger.send(sender=None, logger=task_logger, **options)


def _current_conf() -> Any:
    from .app import current_app

    return current_app().conf
