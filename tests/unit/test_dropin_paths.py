"""Celery's module paths resolve under celeriac with the same names and meaning."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from typing import Any

import pytest

# What real Celery projects import (found by reading them), as (module, names).
CELERY_IMPORTS = [
    ("celeriac", ["Celery", "Task", "shared_task", "current_app", "current_task", "states", "signature", "chain",
                  "group", "chord", "chunks", "AsyncResult", "GroupResult", "uuid"]),
    ("celeriac.utils.log", ["get_task_logger", "get_logger", "task_logger", "mlevel"]),
    ("celeriac.utils.time", ["get_exponential_backoff_interval", "maybe_timedelta", "maybe_iso8601", "remaining",
                             "timezone"]),
    ("celeriac.contrib.abortable", ["AbortableTask", "AbortableAsyncResult", "ABORTED"]),
    ("celeriac.app.task", ["Task", "Context"]),
    ("celeriac.app.base", ["Celery"]),
    ("celeriac.app.control", ["Control", "Inspect"]),
    ("celeriac.result", ["AsyncResult", "GroupResult", "EagerResult", "allow_join_result", "denied_join_result"]),
    ("celeriac.canvas", ["Signature", "signature", "chain", "group", "chord", "chunks", "maybe_signature",
                         "xmap", "xstarmap", "subtask"]),
    ("celeriac.schedules", ["crontab", "schedule", "solar", "schedstate"]),
    ("celeriac.states", ["PENDING", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED", "READY_STATES",
                         "UNREADY_STATES", "EXCEPTION_STATES", "PROPAGATE_STATES", "ALL_STATES", "state",
                         "precedence"]),
    ("celeriac.exceptions", [
        "reraise", "CeleryWarning", "AlwaysEagerIgnored", "DuplicateNodenameWarning", "FixupWarning",
        "NotConfigured", "SecurityWarning", "CeleryError", "ImproperlyConfigured", "SecurityError",
        "OperationalError", "TaskPredicate", "Ignore", "Reject", "Retry", "TaskError", "QueueNotFound",
        "IncompleteStream", "NotRegistered", "AlreadyRegistered", "TimeoutError", "MaxRetriesExceededError",
        "TaskRevokedError", "InvalidTaskError", "ChordError", "BackendError", "BackendGetMetaError",
        "BackendStoreError", "SoftTimeLimitExceeded", "TimeLimitExceeded", "WorkerLostError", "Terminated",
        "CPendingDeprecationWarning", "CDeprecationWarning", "WorkerShutdown", "WorkerTerminate",
        "CeleryCommandException", "EncodeError", "DecodeError", "RetryTaskError"]),
    ("celeriac.signals", [
        "before_task_publish", "after_task_publish", "task_internal_error", "task_prerun", "task_postrun",
        "task_success", "task_received", "task_rejected", "task_unknown", "task_retry", "task_failure",
        "task_revoked", "celeryd_init", "celeryd_after_setup", "worker_init", "worker_before_create_process",
        "worker_process_init", "worker_process_shutdown", "worker_ready", "worker_shutdown",
        "worker_shutting_down", "setup_logging", "after_setup_logger", "after_setup_task_logger", "beat_init",
        "beat_embedded_init", "heartbeat_sent", "import_modules", "Signal"]),
]


@pytest.mark.parametrize("module,names", CELERY_IMPORTS, ids=[m for m, _ in CELERY_IMPORTS])
def test_celery_module_paths_resolve(module: str, names: list[str]) -> None:
    loaded = importlib.import_module(module)
    missing = [n for n in names if not hasattr(loaded, n)]
    assert not missing, f"{module} lacks {missing}"


def test_exceptions_keep_celerys_class_tree() -> None:
    from celeriac import exceptions as e
    for predicate in (e.Retry, e.Ignore, e.Reject):
        assert issubclass(predicate, e.TaskPredicate) and issubclass(predicate, e.CeleryError)
    for task_error in (e.MaxRetriesExceededError, e.TaskRevokedError, e.InvalidTaskError, e.ChordError,
                       e.NotRegistered, e.QueueNotFound, e.TimeoutError, e.AlreadyRegistered):
        assert issubclass(task_error, e.TaskError)
    assert issubclass(e.NotRegistered, KeyError) and issubclass(e.QueueNotFound, KeyError)
    assert issubclass(e.WorkerShutdown, SystemExit) and issubclass(e.CeleryWarning, UserWarning)
    assert str(e.NotRegistered("x.y")) == "Task of name 'x.y' is not registered"
    store_error = e.BackendStoreError("down", state="SUCCESS", task_id="t1")
    assert (store_error.state, store_error.task_id) == ("SUCCESS", "t1")


def test_same_objects_not_copies() -> None:
    import celeriac
    from celeriac import exceptions, log, task
    from celeriac.app.task import Task
    from celeriac.utils.log import get_task_logger
    assert Task is task.Task is celeriac.Task
    assert get_task_logger is log.get_task_logger
    assert importlib.import_module("celeriac.exceptions").Retry is exceptions.Retry


def test_current_task_proxy_outside_and_inside_a_task() -> None:
    from celeriac import Celeriac, current_task
    assert not current_task
    with pytest.raises(RuntimeError, match="no task is running"):
        current_task.request  # noqa: B018
    app = Celeriac("proxy", broker="memory://", backend="memory://", set_as_current=False)

    @app.task
    def who() -> str:
        return f"{current_task.name} {current_task.request.id}"

    assert who.apply(task_id="abc").get() == f"{who.name} abc"


def test_state_compares_by_precedence() -> None:
    from celeriac.states import FAILURE, PENDING, STARTED, SUCCESS, state
    assert state(SUCCESS) > state(STARTED) > state(PENDING)
    assert state("PROGRESS") > state(STARTED) and state("PROGRESS") < state(FAILURE)


@pytest.mark.parametrize("event,lat,lon,day,expected", [
    ("sunrise", 51.5074, -0.1278, (2024, 6, 21), "03:43"),     # London, midsummer (04:43 BST)
    ("sunset", 51.5074, -0.1278, (2024, 6, 21), "20:21"),
    ("solar_noon", 51.5074, -0.1278, (2024, 6, 21), "12:02"),
    ("sunset", -37.81753, 144.96715, (2024, 12, 21), "09:42"),  # Melbourne (20:42 AEDT)
])
def test_solar_events(event: str, lat: float, lon: float, day: tuple[int, int, int], expected: str) -> None:
    from celeriac.schedules import solar
    at = datetime.fromtimestamp(solar(event, lat, lon).next_after(datetime(*day, tzinfo=UTC).timestamp()), UTC)
    hours, minutes = map(int, expected.split(":"))
    wanted = datetime(*day, hours, minutes, tzinfo=UTC)
    assert abs((at - wanted).total_seconds()) < 120, at


def test_solar_polar_night_skips_to_the_first_sunrise_and_bad_input() -> None:
    from celeriac.schedules import solar
    start = datetime(2024, 12, 21, tzinfo=UTC).timestamp()
    first = datetime.fromtimestamp(solar("sunrise", 69.65, 18.96).next_after(start), UTC)  # Tromsø
    assert datetime(2025, 1, 10, tzinfo=UTC) < first < datetime(2025, 1, 20, tzinfo=UTC)
    with pytest.raises(ValueError, match="not known"):
        solar("moonrise", 0, 0)
    with pytest.raises(ValueError, match="latitude"):
        solar("sunrise", 91, 0)


def test_utils_time_helpers() -> None:
    from datetime import timedelta

    from celeriac.utils.time import get_exponential_backoff_interval, maybe_timedelta, remaining, timezone
    assert [get_exponential_backoff_interval(1, n, 10) for n in range(5)] == [1, 2, 4, 8, 10]
    assert all(0 <= get_exponential_backoff_interval(4, 2, 100, full_jitter=True) <= 16 for _ in range(50))
    assert maybe_timedelta(3) == timedelta(seconds=3) and maybe_timedelta("x") == "x"
    start = datetime(2024, 1, 1, tzinfo=UTC)
    assert remaining(start, timedelta(minutes=5), now=datetime(2024, 1, 1, 0, 2, tzinfo=UTC)) == timedelta(minutes=3)
    assert str(timezone.get_timezone("Europe/Paris")) == "Europe/Paris" and timezone.utc is UTC


def test_task_logger_records_carry_task_name_and_id() -> None:
    import logging

    from celeriac import Celeriac
    from celeriac.utils.log import get_task_logger
    app = Celeriac("logs", broker="memory://", backend="memory://", set_as_current=False)
    records: list[logging.LogRecord] = []
    logger = get_task_logger("dropin.paths")

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        @app.task
        def noisy() -> None:
            logger.info("hello")

        noisy.apply(task_id="t-1")
    finally:
        logger.removeHandler(handler)
    assert [(r.task_name, r.task_id) for r in records] == [(noisy.name, "t-1")]  # type: ignore[attr-defined]


def test_uuid_is_a_fresh_task_id() -> None:
    import uuid as std_uuid

    from celeriac import uuid
    first, second = uuid(), uuid()
    assert first != second and str(std_uuid.UUID(first)) == first


def test_logging_signals_and_worker_hijack_root_logger_false() -> None:
    import logging

    from celeriac import signals
    from celeriac.log import setup_worker_logging
    root = logging.getLogger()
    before_handlers, before_level = list(root.handlers), root.level
    sent: list[tuple[str, str, int]] = []

    def note(signal: Any = None, logger: Any = None, loglevel: int = 0, **_: Any) -> None:
        sent.append((signal.name, logger.name, loglevel))

    signals.after_setup_logger.connect(note)
    signals.after_setup_task_logger.connect(note)
    try:
        setup_worker_logging("warning", "%(message)s", hijack_root=False)
        assert root.handlers[:len(before_handlers)] == before_handlers  # kept, not replaced
    finally:
        signals.after_setup_logger.disconnect(note)
        signals.after_setup_task_logger.disconnect(note)
        root.handlers[:] = before_handlers
        root.setLevel(before_level)
    assert sent == [("after_setup_logger", "root", logging.WARNING),
                    ("after_setup_task_logger", "celeriac.task", logging.WARNING)]
