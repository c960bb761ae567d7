"""`from celeriac.contrib.testing.worker import start_worker`, as Celery's unittest-style suites write it."""

from __future__ import annotations

from ...testing import TestWorker, start_worker

__all__ = ["TestWorker", "start_worker"]
