"""Signals for the usual hooks, with Celery's names and keyword arguments."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

logger = logging.getLogger("celeriac.signals")

Receiver = Callable[..., Any]


class Signal:
    """`@sig.connect` or `sig.connect(fn, sender=...)`; `send()` calls every receiver.

    A receiver that raises is logged and does not stop the others (nor the task).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._receivers: list[tuple[Receiver, Any]] = []
        self._lock = threading.Lock()

    def connect(self, receiver: Receiver | None = None, *, sender: Any = None,
                weak: bool = False, dispatch_uid: str | None = None) -> Any:
        def register(fn: Receiver) -> Receiver:
            with self._lock:
                if all(r is not fn or s is not sender for r, s in self._receivers):
                    self._receivers.append((fn, sender))
            return fn

        if receiver is None:
            return register
        return register(receiver)

    def disconnect(self, receiver: Receiver, sender: Any = None) -> None:
        with self._lock:
            self._receivers = [(r, s) for r, s in self._receivers if not (r is receiver and s is sender)]

    @property
    def receivers(self) -> list[tuple[Receiver, Any]]:
        return self._receivers

    def send(self, sender: Any = None, **kwargs: Any) -> list[tuple[Receiver, Any]]:
        if not self._receivers:
            return []
        responses = []
        for receiver, wanted in list(self._receivers):
            if wanted is not None and wanted is not sender and wanted != getattr(sender, "name", sender):
                continue
            try:
                responses.append((receiver, receiver(signal=self, sender=sender, **kwargs)))
            except Exception:
                logger.exception("signal %s: receiver %r raised", self.name, receiver)
        return responses

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"


before_task_publish = Signal("before_task_publish")
after_task_publish = Signal("after_task_publish")
task_received = Signal("task_received")
task_prerun = Signal("task_prerun")
task_postrun = Signal("task_postrun")
task_success = Signal("task_success")
task_failure = Signal("task_failure")
task_retry = Signal("task_retry")
task_revoked = Signal("task_revoked")
task_rejected = Signal("task_rejected")
task_unknown = Signal("task_unknown")
task_internal_error = Signal("task_internal_error")
worker_init = Signal("worker_init")
worker_process_init = Signal("worker_process_init")
worker_process_shutdown = Signal("worker_process_shutdown")
worker_ready = Signal("worker_ready")
worker_shutdown = Signal("worker_shutdown")
worker_shutting_down = Signal("worker_shutting_down")
setup_logging = Signal("setup_logging")
after_setup_logger = Signal("after_setup_logger")
after_setup_task_logger = Signal("after_setup_task_logger")
beat_init = Signal("beat_init")
import_modules = Signal("import_modules")
