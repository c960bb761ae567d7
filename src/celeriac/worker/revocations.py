"""A worker's view of revoked task ids: read incrementally from the durable store.

`app.control.revoke()` writes to the result store with a bounded lifetime
(`worker_revoke_expires`), so a worker that starts after the revoke still honours it.
Each pool slot re-reads what is new at most every `worker_revoke_sync_interval` before
starting a task: one small read per interval, not one per task.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from ..exceptions import OperationalError

if TYPE_CHECKING:
    from ..app import Celeriac

logger = logging.getLogger("celeriac.worker")


class Revocations:
    def __init__(self, app: "Celeriac", interval: float | None = None) -> None:
        self.app = app
        conf = app.conf
        self.interval = float(conf.worker_revoke_sync_interval if interval is None else interval)
        self.lifetime = float(conf.worker_revoke_expires or 10800.0)
        self._cursor = 0
        self._last = float("-inf")
        self._revoked: dict[str, tuple[str | None, float]] = {}  # id -> (terminate signal, forget after)
        self._warned = False

    def refresh(self, force: bool = False) -> list[tuple[str, str | None]]:
        """Read revocations recorded since the last read; returns the new ones."""
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return []
        try:
            new, self._cursor = self.app.backend.revoked_since(self._cursor)
        except OperationalError as exc:
            if not self._warned:
                self._warned = True
                logger.warning("cannot read revocations (%s); tasks start without that check until it "
                               "works again", exc)
            return []
        self._warned = False
        self._last = now
        for task_id, signal in new:
            self._revoked[task_id] = (signal, now + self.lifetime)
        if len(self._revoked) > 10_000:  # bounded memory: drop what the store has dropped too
            self._revoked = {k: v for k, v in self._revoked.items() if v[1] > now}
        return new

    def known(self) -> list[str]:
        return list(self._revoked)

    def is_revoked(self, task_id: str) -> bool:
        self.refresh()
        return task_id in self._revoked
