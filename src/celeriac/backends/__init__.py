"""Result stores: the interface (base.py); the implementations live in celeriac.transports, found by URL scheme."""

from __future__ import annotations

from typing import Any

from .. import transports
from .base import ResultStore, StoredResult


def create_result_store(url: str, **kwargs: Any) -> ResultStore:
    cls = transports.implementation(url, "results", "result backend", "or none for the embedded SQLite file")
    store: ResultStore = cls(url, **kwargs)
    return store


__all__ = ["ResultStore", "StoredResult", "create_result_store"]
