"""Settings: Celery's lower-case names, their defaults, and loading from objects/env."""

from __future__ import annotations

import importlib
import os
from typing import Any, Iterator, MutableMapping

from .celery_old_names import OLD_NAMES

DEFAULT_SQLITE_FILE = "celeriac.db"

DEFAULTS: dict[str, Any] = {
    # transports
    "broker_url": None,
    "result_backend": None,
    "broker_connection_retry": True,
    "broker_connection_max_retries": 10,
    "broker_transport_options": {},
    "broker_use_ssl": None,
    "redis_backend_use_ssl": None,
    "result_backend_transport_options": {},
    "postgres_schema": "celeriac",  # the schema of celeriac's tables on a postgresql:// broker or result store
    "result_extended": False,
    # publishing and routing
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "result_accept_content": None,
    "task_default_queue": "celery",
    "task_default_priority": 0,
    # Queues on which celeriac speaks Celery's wire (kombu's Redis lists, a plain RabbitMQ queue,
    # Celery's result keys), so Celery clients and workers share them: docs/celery-interop.md.
    # [] once no Celery process remains: celeriac's own layout everywhere.
    "celery_wire_queues": ["celery"],
    "task_queue_max_priority": None,  # Celery's: x-max-priority of wire queues on RabbitMQ (None: plain)
    "task_routes": None,
    "task_publish_retry": True,
    "task_publish_retry_policy": {"max_retries": 3, "interval_start": 0.0, "interval_step": 0.2,
                                  "interval_max": 0.2},
    # execution
    "task_always_eager": False,
    "task_eager_propagates": False,
    "task_store_eager_result": False,
    "task_acks_late": True,
    "task_reject_on_worker_lost": None,
    "task_ignore_result": False,
    "task_track_started": False,
    "task_send_sent_event": False,  # clients emit task-sent events
    "worker_send_task_events": False,  # workers emit task-* events (-E)
    "event_buffer_size": 10000,  # events a process holds while the broker is slow; more are dropped and counted
    "event_flush_interval": 0.1,  # seconds between two batches of events
    "task_time_limit": None,
    "task_soft_time_limit": None,
    "task_max_deliveries": 5,
    "task_default_queue_type": "classic",  # "quorum": RabbitMQ quorum queues (docs/rabbitmq-quorum.md)
    "task_annotations": None,
    # results
    "result_expires": 86400.0,
    "task_history": True,  # workers keep a durable task history for the dashboard (celeriac.history)
    "task_history_expires": 7 * 86400.0,  # seconds a task's history record is kept
    "task_history_max": 100_000,  # most task records kept (the oldest go first)
    # worker
    "worker_concurrency": None,
    "worker_pool": "process",
    "worker_prefetch_multiplier": 4,
    "worker_async_concurrency": 100,
    "worker_heartbeat_interval": 2.0,
    "worker_lease_timeout": 15.0,
    "worker_shutdown_timeout": 60.0,
    # with --logfile, print() in a task becomes a log record at this level (celeriac.daemon)
    "worker_redirect_stdouts": True,
    "worker_redirect_stdouts_level": "WARNING",
    "task_default_rate_limit": None,
    "task_rate_limit_scope": "worker",  # "worker" (Celery's meaning) or "global" (shared by all workers)
    "worker_max_tasks_per_child": None,
    "worker_autoscaler_keepalive": 30.0,  # seconds a slot stays idle before --autoscale removes it
    "worker_max_memory_per_child": None,  # KiB of resident memory
    "worker_revoke_expires": 10800.0,  # how long a revocation is kept (Celery's default: 3 hours)
    "worker_revoke_sync_interval": 0.05,  # a revocation older than this is seen by every task start
    "worker_hijack_root_logger": True,
    "worker_log_format": "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s",
    "worker_task_log_format": ("[%(asctime)s: %(levelname)s/%(processName)s] "
                               "%(task_name)s[%(task_id)s]: %(message)s"),
    # scheduling
    "timezone": None,
    "enable_utc": True,
    "beat_schedule": {},
    "beat_name": None,  # which schedule state and lease beats share (default: the app's name)
    "beat_lease_timeout": 10.0,  # a standby beat takes over at most this long after the leader died
    "beat_missed_after": None,  # a tick later than this is "missed" (default: twice the lease)
    "beat_missed_policy": "run_once",  # what missed ticks get: "run_once" or "skip" (per entry: "missed")
    "beat_max_loop_interval": 300.0,  # longest sleep between two looks at the schedule
    "include": [],
    "imports": [],
}

# Upper-case names of Celery 3 (Celery's full table, plus a few older spellings it also read).
_LEGACY = {
    **OLD_NAMES,
    "BROKER_URL": "broker_url",
    "CELERY_RESULT_BACKEND": "result_backend",
    "CELERY_ALWAYS_EAGER": "task_always_eager",
    "CELERY_EAGER_PROPAGATES_EXCEPTIONS": "task_eager_propagates",
    "CELERY_TASK_RESULT_EXPIRES": "result_expires",
    "CELERYD_CONCURRENCY": "worker_concurrency",
    "CELERYD_PREFETCH_MULTIPLIER": "worker_prefetch_multiplier",
    "CELERYBEAT_SCHEDULE": "beat_schedule",
    "CELERY_TIMEZONE": "timezone",
    "CELERY_ROUTES": "task_routes",
}


class Settings(MutableMapping[str, Any]):
    """A mapping with attribute access (`app.conf.task_always_eager = True`)."""

    _data: dict[str, Any]  # the values; the publish path reads it directly (no __getattr__ per setting)

    def __init__(self, initial: dict[str, Any] | None = None, on_change: Any = None) -> None:
        object.__setattr__(self, "_data", dict(DEFAULTS))
        object.__setattr__(self, "_on_change", on_change)
        if initial:
            self._data.update(initial)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            raise AttributeError(f"no setting named {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value
        if self._on_change is not None:  # the app drops connections made with the old value
            self._on_change(key)

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<Settings {len(self._data)} keys>"

    def load_object(self, obj: Any, namespace: str | None = None) -> None:
        """Copy settings from a module/object/dict; `namespace="CELERY"` reads CELERY_<NAME>."""
        if isinstance(obj, str):
            module_name, _, attr = obj.partition(":")
            obj = importlib.import_module(module_name)
            if attr:
                obj = getattr(obj, attr)
        prefix = f"{namespace.upper()}_" if namespace else ""
        keys = list(obj) if isinstance(obj, dict) else dir(obj)
        for key in keys:
            name = None if key.startswith("__") else _setting_name(key, prefix)
            if name is None:
                continue
            # Only the settings taken are read: reading any other attribute may raise (Django's
            # settings raise on an empty SECRET_KEY, and warn on deprecated names).
            self[name] = obj[key] if isinstance(obj, dict) else getattr(obj, key)


def _setting_name(key: str, prefix: str) -> str | None:
    if prefix:
        if not key.startswith(prefix):
            return None
        if prefix == "CELERY_" and key in OLD_NAMES:  # CELERY_DEFAULT_QUEUE is task_default_queue
            return OLD_NAMES[key]
        return key[len(prefix):].lower() or None
    if key in _LEGACY:
        return _LEGACY[key]
    if key.islower():
        return key
    return None


def env_urls() -> tuple[str | None, str | None]:
    """The environment overrides the app's own URLs, so one code base runs anywhere. Celery's
    variables count too (after celeriac's): a deployment moved from Celery keeps its servers
    instead of quietly running on the embedded file."""
    broker = os.environ.get("CELERIAC_BROKER_URL") or os.environ.get("CELERY_BROKER_URL")
    backend = os.environ.get("CELERIAC_RESULT_BACKEND") or os.environ.get("CELERY_RESULT_BACKEND")
    return broker or None, backend or None
