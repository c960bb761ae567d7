"""`--autoscale MAX,MIN`: the pool grows while every slot is busy and messages wait, and
shrinks by one slot after it has been idle for `worker_autoscaler_keepalive` seconds."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from ..exceptions import OperationalError

if TYPE_CHECKING:
    from ..app import Celeriac
    from .pool import Pool
    from .supervisor import WorkerOptions

logger = logging.getLogger("celeriac.worker")


class Autoscaler:
    def __init__(self, app: "Celeriac", pool: "Pool", options: "WorkerOptions") -> None:
        self.app = app
        self.pool = pool
        self.options = options  # read on every look: `celeriac control autoscale` changes the range
        self._last_check = 0.0
        self._idle_since = time.monotonic()

    def tick(self) -> None:
        """Look at most once a second."""
        now = time.monotonic()
        if not self.options.autoscale or now - self._last_check < 1.0:
            return
        self._last_check = now
        busy = self.pool.busy()
        if busy:
            self._idle_since = now
        try:
            sizes = self.app.broker.queue_sizes(self.options.queues)
        except OperationalError:
            return
        waiting = sum(int(v.get("ready", 0)) for v in sizes.values())
        self._scale(now, busy, waiting)

    def _scale(self, now: float, busy: int, waiting: int) -> None:
        assert self.options.autoscale is not None
        most, least = self.options.autoscale
        size = len(self.pool.slots)
        if waiting and busy >= size and size < most:
            grow = min(most - size, max(1, waiting))
            logger.info("autoscale: %d message(s) waiting and every slot busy; growing the pool to %d",
                        waiting, size + grow)
            self.pool.grow(grow)
            self._idle_since = now
        elif not waiting and size > least and busy < size \
                and now - self._idle_since >= float(self.app.conf.worker_autoscaler_keepalive):
            logger.info("autoscale: idle for %.0fs; shrinking the pool to %d", now - self._idle_since, size - 1)
            self.pool.shrink(1)
            self._idle_since = now
