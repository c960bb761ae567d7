"""Celery's settings that celeriac does not use: each one gets a one-line warning at worker start.

Every setting of Celery's configuration reference is in one of three groups:
- supported: the names in `config.DEFAULTS`, accepted silently;
- DIFFERENT: celeriac already does what the setting is for, in its own way, so it has no
  effect. A value that asks for what celeriac does (e.g. `task_acks_late = True`) passes
  silently; any other value is warned about, since the user asked for something else;
- UNSUPPORTED: nothing in celeriac does what it asks for; setting it is warned about.
A name that is in neither celeriac nor Celery is most likely misspelled: warned about too.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any, Mapping

from .config import DEFAULTS

logger = logging.getLogger("celeriac.app")

ANY = object()  # DIFFERENT settings whose every value is already what celeriac does


@dataclass(frozen=True)
class Different:
    why: str
    fine: tuple[Any, ...] | object = ANY  # values celeriac's behaviour already gives


_EVENTS = "celeriac keeps events in its own event stream (see docs/monitoring.md)"
_CONTROL = "remote control uses celeriac's own channel on the broker"
_PROCESS = "give it on the command line as Celery does (--logfile, --pidfile, --uid...; see docs/workers.md)"
_REDIS_OPTION = "set {option!r} in result_backend_transport_options instead"
_NO_STORE = "celeriac has no {what} result store; results go to SQLite, Redis or memory"
_SQLALCHEMY = ("an option of Celery's SQLAlchemy store: a db+sqlite:// URL maps to celeriac's SQLite store, "
               "which has its own tables")

DIFFERENT: dict[str, Different] = {
    "enable_utc": Different("times in messages and results are always UTC", (True,)),
    "task_protocol": Different("celeriac speaks Celery's message protocol 2", (2,)),
    "task_acks_late": Different("a message is always acknowledged after its task finished (at-least-once)",
                                (True,)),
    "task_acks_on_failure_or_timeout": Different("a failed or timed-out task is recorded and its message "
                                                 "acknowledged", (True,)),
    "task_acks_on_failure": Different("a failed task is recorded and its message acknowledged", (True,)),
    "task_acks_on_timeout": Different("a timed-out task is recorded and its message acknowledged", (True,)),
    "task_reject_on_worker_lost": Different("a task whose worker died runs again, up to task_max_deliveries, "
                                            "then goes to the dead-letter queue", (True, None)),
    "task_create_missing_queues": Different("queues are always created on first use", (True,)),
    "task_create_missing_queue_type": Different("queues are created on first use, of celeriac's own kind"),
    "task_create_missing_queue_exchange_type": Different("celeriac routes by queue name; there are no exchanges"),
    "task_default_exchange": Different("celeriac routes by queue name; there are no exchanges"),
    "task_default_exchange_type": Different("celeriac routes by queue name; there are no exchanges"),
    "task_default_routing_key": Different("celeriac routes by queue name; there are no routing keys"),
    "task_default_delivery_mode": Different("messages are always persistent", ("persistent", 2)),
    "broker_connection_retry": Different("a worker always reconnects to a broker it lost", (True,)),
    "broker_connection_max_retries": Different("a worker reconnects to a broker it lost for as long as it runs"),
    "broker_heartbeat": Different("dead workers are found by their lease, which the live worker renews "
                                  "(worker_heartbeat_interval, worker_lease_timeout)"),
    "broker_heartbeat_checkrate": Different("dead workers are found by their lease (worker_lease_timeout)"),
    "broker_pool_limit": Different("each process keeps its own broker connection; there is no pool to size"),
    "broker_pool_acquire_timeout": Different("each process keeps its own broker connection; there is no pool"),
    "broker_native_delayed_delivery_queue_type": Different("delayed tasks wait in celeriac's own delay store "
                                                           "in the broker"),
    "worker_eta_task_limit": Different("ETA and countdown tasks wait in the broker, never in worker memory"),
    "worker_timer_precision": Different("ETA and countdown tasks wait in the broker, never in a worker timer"),
    "worker_disable_prefetch": Different("prefetch is bounded per pool slot (worker_prefetch_multiplier)"),
    "worker_enable_prefetch_count_reduction": Different("prefetch is bounded per pool slot and never grows"),
    "worker_lost_wait": Different("a pool process that died is noticed at once and its task given back"),
    "worker_proc_alive_timeout": Different("pool processes report ready through shared memory"),
    "worker_state_db": Different("revocations are kept in the result store and survive restarts without a file"),
    "worker_enable_remote_control": Different("remote control is always on", (True,)),
    "worker_cancel_long_running_tasks_on_connection_loss": Different(
        "a running task keeps its message leased while its worker lives, so it is never run twice", (False,)),
    "worker_detect_quorum_queues": Different("a worker consuming a quorum queue always sets a per-consumer prefetch"),
    "worker_pool_putlocks": Different("a pool slot takes a message only when it can run it"),
    "result_backend_thread_safe": Different("result store connections are always safe to share between threads"),
    "result_cache_max": Different("the client does not cache results; get() reads the store"),
    "result_chord_join_timeout": Different("chords are counted atomically in the store; nothing polls"),
    "result_chord_retry_interval": Different("chords are counted atomically in the store; nothing polls"),
    "result_persistent": Different("stored results are always durable"),
    "beat_schedule_filename": Different("beat keeps its state in the broker or result store, not in a file"),
    "beat_sync_every": Different("beat records every tick as it sends it"),
    "event_serializer": Different("events are always JSON", ("json",)),
    "event_queue_ttl": Different(_EVENTS),
    "event_queue_expires": Different(_EVENTS),
    "event_queue_durable": Different(_EVENTS),
    "event_queue_exclusive": Different(_EVENTS),
    "event_queue_prefix": Different(_EVENTS),
    "event_exchange": Different(_EVENTS),
    "control_queue_ttl": Different(_CONTROL),
    "control_queue_expires": Different(_CONTROL),
    "control_exchange": Different(_CONTROL),
    "control_queue_durable": Different(_CONTROL),
    "control_queue_exclusive": Different(_CONTROL),
}

UNSUPPORTED: dict[str, str] = {
    "task_annotations": "give the options to @app.task, or use task_routes for queues",
    "task_compression": "messages are not compressed",
    "result_compression": "results are not compressed",
    "task_remote_tracebacks": "the traceback is stored as text with the result (AsyncResult.traceback)",
    "task_store_errors_even_if_ignored": "set store_errors_even_if_ignored=True on the task instead",
    "task_allow_error_cb_on_chord_header": "errbacks on chord header tasks are not supported",
    "task_queues": "queues are created on first use, and a worker consumes task_default_queue unless "
                   "-Q names the queues (on RabbitMQ, only a queue's x-queue-type is read from it)",
    "task_inherit_parent_priority": "give priority= to the calls that need it",
    "worker_direct": "there are no per-worker queues",
    "worker_deduplicate_successful_tasks": "a redelivered task runs again even if it succeeded before",
    "worker_soft_shutdown_timeout": "use worker_shutdown_timeout (warm shutdown)",
    "worker_enable_soft_shutdown_on_idle": "use worker_shutdown_timeout (warm shutdown)",
    "worker_disable_rate_limits": "remove rate_limit from the tasks instead",
    "worker_log_color": "log lines are never colored",
    "worker_task_log_format": "task log lines use worker_log_format",
    "worker_pool_restarts": "there is no pool_restart command",
    "worker_autoscaler": "use --autoscale; the autoscaler cannot be replaced",
    "worker_consumer": "the consumer cannot be replaced",
    "worker_timer": "the timer cannot be replaced",
    "worker_agent": "there are no worker agents",
    "broker_connection_retry_on_startup": "a worker exits with status 1 when the broker is unreachable at start",
    "broker_connection_timeout": "for Redis, set socket_connect_timeout in broker_transport_options",
    "broker_read_url": "one broker_url serves reads and writes",
    "broker_write_url": "one broker_url serves reads and writes",
    "broker_failover_strategy": "failover is not supported",
    "broker_login_method": "credentials go in the URL",
    "broker_transport": "the scheme of broker_url chooses the broker",
    "beat_scheduler": "beat's schedule is beat_schedule and add_periodic_task; it cannot be replaced",
    "beat_cron_starting_deadline": "use beat_missed_after and beat_missed_policy",
    "result_backend_always_retry": "a result store error is raised at once",
    "result_backend_max_retries": "a result store error is raised at once",
    "result_backend_base_sleep_between_retries_ms": "a result store error is raised at once",
    "result_backend_max_sleep_between_retries_ms": "a result store error is raised at once",
    "result_exchange": "results never travel over AMQP",
    "result_exchange_type": "results never travel over AMQP",
    "override_backends": "result stores cannot be replaced by name",
    "redis_backend_health_check_interval": _REDIS_OPTION.format(option="health_check_interval"),
    "redis_max_connections": _REDIS_OPTION.format(option="max_connections"),
    "redis_socket_connect_timeout": _REDIS_OPTION.format(option="socket_connect_timeout"),
    "redis_socket_timeout": _REDIS_OPTION.format(option="socket_timeout"),
    "redis_retry_on_timeout": "Redis commands are not retried on a timeout",
    "redis_socket_keepalive": "Redis connections use TCP keepalive already",
    "redis_client_name": "Redis connections are not named",
    "redis_backend_credential_provider": "credentials go in the URL",
    "redis_host": "use result_backend = 'redis://host:port/db'",
    "redis_port": "use result_backend = 'redis://host:port/db'",
    "redis_db": "use result_backend = 'redis://host:port/db'",
    "redis_username": "use result_backend = 'redis://user:password@host:port/db'",
    "redis_password": "use result_backend = 'redis://user:password@host:port/db'",
    "cache_backend": _NO_STORE.format(what="cache (memcached)"),
    "cache_backend_options": _NO_STORE.format(what="cache (memcached)"),
    "mongodb_backend_settings": _NO_STORE.format(what="MongoDB"),
    "couchbase_backend_settings": _NO_STORE.format(what="Couchbase"),
    "arangodb_backend_settings": _NO_STORE.format(what="ArangoDB"),
    "security_key": "message signing (the auth serializer) is not supported",
    "security_key_password": "message signing (the auth serializer) is not supported",
    "security_certificate": "message signing (the auth serializer) is not supported",
    "security_cert_store": "message signing (the auth serializer) is not supported",
    "security_digest": "message signing (the auth serializer) is not supported",
}
for _name in ("database_create_tables_at_setup", "database_engine_options", "database_short_lived_sessions",
              "database_table_schemas", "database_table_names", "database_engine_callback", "database_db_names"):
    UNSUPPORTED[_name] = _SQLALCHEMY
for _prefix, _what, _names in (
        ("cassandra_", "Cassandra", "servers secure_bundle_path port keyspace table read_consistency "
                                    "write_consistency entry_ttl auth_provider auth_kwargs options"),
        ("s3_", "S3", "access_key_id secret_access_key bucket base_path endpoint_url region"),
        ("azureblockblob_", "Azure Block Blob", "container_name base_path retry_initial_backoff_sec "
                                                "retry_increment_base retry_max_attempts connection_timeout "
                                                "read_timeout"),
        ("gcs_", "Google Cloud Storage", "bucket project base_path"),
        ("elasticsearch_", "Elasticsearch", "retry_on_timeout max_retries timeout save_meta_as_text"),
        ("cosmosdbsql_", "Azure Cosmos DB", "database_name collection_name consistency_level max_retry_attempts "
                                           "max_retry_wait_time")):
    for _name in _names.split():
        UNSUPPORTED[_prefix + _name] = _NO_STORE.format(what=_what)
for _tool in ("worker", "beat", "events"):
    for _name in ("logfile", "pidfile", "uid", "gid", "umask", "executable"):
        UNSUPPORTED[f"{_tool}_{_name}"] = _PROCESS

_MISSING = object()


def settings_warnings(conf: Mapping[str, Any]) -> list[str]:
    """One line per setting that has no effect here although the user set it."""
    lines = []
    for key in sorted(conf):
        value = conf[key]
        if key in DEFAULTS and value == DEFAULTS[key]:
            continue  # celeriac's own default, not something the user asked for
        if key in DIFFERENT:
            rule = DIFFERENT[key]
            if rule.fine is ANY or value in rule.fine:  # type: ignore[operator]
                continue
            lines.append(f"the Celery setting {key} = {value!r} has no effect in celeriac: {rule.why}")
        elif key in UNSUPPORTED:
            lines.append(f"the Celery setting {key!r} is not supported by celeriac and has no effect: "
                         f"{UNSUPPORTED[key]}")
        elif key not in DEFAULTS:
            if inspect.ismodule(value) or inspect.isroutine(value) or inspect.isclass(value):
                continue  # code in a settings module (`import os`, a helper function), not a setting
            import difflib  # only for a misspelt setting: not on every start
            near = difflib.get_close_matches(key, list(DEFAULTS) + list(DIFFERENT) + list(UNSUPPORTED), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            lines.append(f"unknown setting {key!r}: neither celeriac nor Celery has it{hint}; it has no effect")
    return lines


def warn_about_settings(conf: Mapping[str, Any]) -> None:
    """Log settings_warnings() once per line (the worker and beat call this at start)."""
    for line in settings_warnings(conf):
        logger.warning(line)
