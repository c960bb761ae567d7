"""A worker's view of revoked task ids: read incrementally from the durable store.

`app.control.revoke()` writes to the result store with a bounded lifetime
(`worker_revoke_expires`), so a worker that starts after the revoke still honours it.
Each pool slot re-reads what is new at most every `worker_revoke_sync_interval` before
starting a task: one small read per interval, not one per task.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from ..control import STAMP_PREFIX
from ..exceptions import OperationalError

if TYPE_CHECKING:
    from ..app import Celeriac

logger = logging.getLogger("celeriac.worker")

def _stamp_values(value: Any) -> list[str]:
    """A stamp's values in comparable form (a stamp may hold one value or a list of them)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return [json.dumps(v, sort_keys=True) for v in values]


class Revocations:
    def __init__(self, app: "Celeriac", interval: float | None = None) -> None:
        self.app = app
        conf = app.conf
        self.interval = float(conf.worker_revoke_sync_interval if interval is None else interval)
        self.lifetime = float(conf.worker_revoke_expires or 10800.0)
        self._cursor = 0
        self._last = float("-inf")
        self._revoked: dict[str, tuple[str | None, float]] = {}  # id -> (terminate signal, forget after)
        self._stamps: dict[tuple[str, str], float] = {}  # (stamp name, JSON value) -> forget after
        self._warned = False

    @property
    def cursor(self) -> int:
        return self._cursor

    def due(self, now: float) -> bool:
        return now - self._last >= self.interval

    def refresh(self, force: bool = False) -> list[tuple[str, str | None]]:
        """Read revocations recorded since the last read; returns the new ones."""
        now = time.monotonic()
        if not force and not self.due(now):
            return []
        try:
            new, cursor = self.app.backend.revoked_since(self._cursor)
        except OperationalError as exc:
            if not self._warned:
                self._warned = True
                logger.warning("cannot read revocations (%s); tasks start without that check until it "
                               "works again", exc)
            return []
        return self.take(new, cursor, now)

    def take(self, new: list[tuple[str, str | None]], cursor: int, now: float) -> list[tuple[str, str | None]]:
        """Keep revocations read (here or with the control log, `ResultStore.follow_logs`) at
        `now`; returns the new ones."""
        self._cursor = cursor
        self._warned = False
        self._last = now
        for task_id, signal in new:
            if task_id.startswith(STAMP_PREFIX):
                name, value = json.loads(task_id[len(STAMP_PREFIX):])
                self._stamps[(str(name), json.dumps(value, sort_keys=True))] = now + self.lifetime
                continue
            self._revoked[task_id] = (signal, now + self.lifetime)
        new = [(task_id, signal) for task_id, signal in new if not task_id.startswith(STAMP_PREFIX)]
        if len(self._revoked) > 10_000:  # bounded memory: drop what the store has dropped too
            self._revoked = {k: v for k, v in self._revoked.items() if v[1] > now}
        return new

    def known(self) -> list[str]:
        return list(self._revoked)

    def is_revoked(self, task_id: str) -> bool:
        self.refresh()
        return task_id in self._revoked

    def revoked_stamp(self, stamps: dict[str, Any] | None) -> str | None:
        """The first of these stamps that was revoked (revoke_by_stamped_headers), as "name=value"."""
        if not stamps or not self._stamps:
            return None
        for name, value in stamps.items():
            for text in _stamp_values(value):
                if (name, text) in self._stamps:
                    return f"{name}={text}"
        return None
