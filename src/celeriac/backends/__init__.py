"""Result store implementations, chosen by URL scheme."""

from __future__ import annotations

from typing import Any

from ..brokers.base import implementation_for
from .base import ResultStore, StoredResult

BACKENDS = {
    "memory": "celeriac.backends.memory:MemoryResultStore",
    "sqlite": "celeriac.backends.sqlite:SQLiteResultStore",
    "redis": "celeriac.backends.redis:RedisResultStore",
    "rediss": "celeriac.backends.redis:RedisResultStore",
    "unix": "celeriac.backends.redis:RedisResultStore",
    "redis+cluster": "celeriac.backends.redis:RedisResultStore",
    "rediss+cluster": "celeriac.backends.redis:RedisResultStore",
    "sentinel": "celeriac.backends.redis:RedisResultStore",
    "postgresql": "celeriac.backends.postgres:PostgresResultStore",
    "postgres": "celeriac.backends.postgres:PostgresResultStore",
}


def create_result_store(url: str, **kwargs: Any) -> ResultStore:
    cls = implementation_for(url, BACKENDS, "result backend", "or none for the embedded SQLite file")
    store: ResultStore = cls(url, **kwargs)
    return store


__all__ = ["ResultStore", "StoredResult", "create_result_store"]
