"""The ping task of Celery's test helpers, under Celery's name `celery.ping`.

Importing this module is not needed with celeriac: the test worker registers the task on
its app itself. It exists so that `from celeriac.contrib.testing.tasks import ping` works.
"""

from __future__ import annotations

from ...app import shared_task


def _pong() -> str:
    """Answer "pong"."""
    return "pong"


ping = shared_task(name="celery.ping")(_pong)
