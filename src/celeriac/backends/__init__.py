"""Result store implementations, chosen by URL scheme."""

from __future__ import annotations

import importlib
from typing import Any

from ..brokers.base import safe_url
from ..exceptions import ImproperlyConfigured
from .base import ResultStore, StoredResult

BACKENDS = {
    "memory": "celeriac.backends.memory:MemoryResultStore",
    "sqlite": "celeriac.backends.sqlite:SQLiteResultStore",
    "redis": "celeriac.backends.redis:RedisResultStore",
    "rediss": "celeriac.backends.redis:RedisResultStore",
    "unix": "celeriac.backends.redis:RedisResultStore",
}


def create_result_store(url: str, **kwargs: Any) -> ResultStore:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    target = BACKENDS.get(scheme)
    if target is None:
        raise ImproperlyConfigured(
            f"unsupported result backend {safe_url(url)!r}: supported schemes are "
            + ", ".join(f"{s}://" for s in BACKENDS) + " (or none for the embedded SQLite file)")
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    store: ResultStore = cls(url, **kwargs)
    return store


__all__ = ["ResultStore", "StoredResult", "create_result_store"]
