"""The result store interface: task state and outcome, keyed by task id.

A stored result is the meta mapping Celery users know (`status`, `result`, `traceback`,
`date_done`, `children`, ...), serialized once by the worker. Stores write states
atomically and never let an in-flight state (STARTED, RETRY) overwrite a final one.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from .. import protocol, states
from ..brokers.base import safe_url


@dataclass(slots=True)
class StoredResult:
    task_id: str
    status: str
    data: bytes  # the serialized meta
    expires_in: float | None


class ResultStore(ABC):
    schemes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, url: str, *, serializer: str = "json", accept: Sequence[str] = ("json",),
                 expires: float | None = 86400.0, options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.serializer = serializer
        self.accept = protocol.accepted_types(accept)
        self.expires = expires
        self.options = dict(options or {})

    @property
    def safe_url(self) -> str:
        return safe_url(self.url)

    # --- encoding, shared by every store ---

    def encode(self, meta: dict[str, Any]) -> StoredResult:
        """Serialize a meta mapping; raises EncodeError if the result cannot be encoded."""
        _ctype, data = protocol.dumps(meta, self.serializer)
        return StoredResult(meta["task_id"], meta["status"], data, self.expires)

    def decode(self, data: bytes) -> dict[str, Any]:
        raw = bytes(data)
        ctype = protocol.JSON if raw[:1] in (b"{", b"[") else protocol.PICKLE
        meta: dict[str, Any] = protocol.loads(raw, ctype, self.accept | {protocol.JSON})
        return meta

    # --- the interface ---

    @abstractmethod
    def store(self, results: Sequence[StoredResult]) -> None:
        """Write many results in one round trip; final states win over in-flight ones."""

    @abstractmethod
    def get_many(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Decoded metas of the ids that have one (unknown ids are simply absent)."""

    def get(self, task_id: str) -> dict[str, Any] | None:
        return self.get_many([task_id]).get(task_id)

    def wait(self, task_id: str, timeout: float) -> dict[str, Any] | None:
        """Block until the task is ready or `timeout` passes; return the latest meta.

        The default polls with a growing interval; stores with a push mechanism override it.
        """
        deadline = time.monotonic() + timeout
        interval = 0.001
        while True:
            meta = self.get(task_id)
            if meta is not None and meta.get("status") in states.READY_STATES:
                return meta
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return meta
            time.sleep(min(interval, remaining))
            interval = min(interval * 2, 0.1)

    @abstractmethod
    def forget(self, task_ids: Sequence[str]) -> None:
        """Delete these results."""

    @abstractmethod
    def cleanup(self) -> int:
        """Delete results past their expiry; returns how many."""

    def close(self) -> None:
        """Release connections (optional)."""
