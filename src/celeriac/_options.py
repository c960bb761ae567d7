"""Celery options that celeriac does not support: a clear warning or error naming each one,
never a silent drop (docs/drop-in.md lists them with the reasons)."""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

from .exceptions import CeleryWarning, ImproperlyConfigured

# Task options (`@app.task(...)` or attributes of a base class) that would change what runs:
# accepting them quietly would hide that celeriac does something else.
TASK_OPTION_ERRORS = {
    "backend": "a per-task result backend is not supported: results go to the app's result_backend",
    "Request": "custom worker Request classes are not supported: use the task's handlers "
               "(before_start, on_success, on_failure, ...) or signals",
    "Strategy": "custom worker strategies are not supported",
}
# Task options that are harmless to ignore: the task runs as it would, minus a nicety.
TASK_OPTION_WARNINGS = {
    "acks_on_failure_or_timeout": "a failed task's message is always acknowledged (it is recorded as FAILURE)",
    "send_events": "events follow the worker's -E / worker_send_task_events for all tasks",
    "trail": "children are always recorded",
    "compression": "message bodies are not compressed",
    "resultrepr_maxsize": "result reprs in logs and events are cut at a fixed size",
    "autoregister": "every task made with @app.task is registered",
    "store_eager_result": "use the app setting task_store_eager_result",
    "lazy": "tasks are always created at once",
}
# apply_async / send_task options of Celery's that celeriac ignores.
CALL_OPTION_WARNINGS = {
    "exchange": "celeriac routes by queue name only (use queue=)",
    "exchange_type": "celeriac routes by queue name only (use queue=)",
    "routing_key": "celeriac routes by queue name only (use queue=)",
    "declare": "queues are declared by the broker on first use",
    "retry": "publishing follows the app's task_publish_retry / task_publish_retry_policy",
    "retry_policy": "publishing follows the app's task_publish_retry / task_publish_retry_policy",
    "compression": "message bodies are not compressed",
    "producer": "celeriac publishes through the app's broker connection",
    "publisher": "celeriac publishes through the app's broker connection",
    "connection": "celeriac publishes through the app's broker connection",
    "delivery_mode": "messages are always persistent",
    "mandatory": "not an option of celeriac's brokers",
    "immediate": "not an option of celeriac's brokers",
    "content_type": "use serializer=",
    "content_encoding": "use serializer=",
    "router": "routing follows the app's task_routes",
}


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn_at_caller(message: str) -> None:
    """Warn, pointing at the first line outside celeriac (the user's call or decorator)."""
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, CeleryWarning, stacklevel=level)


def check_task_options(task_name: str, options: dict[str, Any]) -> None:
    """Raise for a Celery task option that would change behaviour; warn for a harmless one."""
    for key in options:
        if key in TASK_OPTION_ERRORS:
            raise ImproperlyConfigured(f"task {task_name}: option {key}= is not supported by celeriac: "
                                       f"{TASK_OPTION_ERRORS[key]}")
        if key in TASK_OPTION_WARNINGS:
            warn_at_caller(f"task {task_name}: option {key}= is ignored by celeriac: {TASK_OPTION_WARNINGS[key]}")


def check_call_options(task_name: str, options: dict[str, Any]) -> None:
    """Warn for each Celery publish option among `options` that celeriac does not use."""
    for key in options:
        if key in CALL_OPTION_WARNINGS:
            warn_at_caller(f"sending {task_name}: option {key}= is ignored by celeriac: {CALL_OPTION_WARNINGS[key]}")
