"""Signals with Celery's names and keyword arguments (`from celeriac.signals import ...`).

docs/retries.md and docs/drop-in.md list when each one is sent and with what.
"""

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
        self._uids: set[Any] = set()
        self._lock = threading.Lock()

    def connect(self, receiver: Receiver | None = None, *, sender: Any = None,
                weak: bool = False, dispatch_uid: str | None = None) -> Any:
        def register(fn: Receiver) -> Receiver:
            with self._lock:
                if dispatch_uid is not None:  # Celery's way to connect once, however often the module loads
                    if (dispatch_uid, sender) in self._uids:
                        return fn
                    self._uids.add((dispatch_uid, sender))
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

    def has_receivers(self) -> bool:
        return bool(self._receivers)

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

    send_robust = send  # send() already logs a receiver's error and goes on

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
beat_embedded_init = Signal("beat_embedded_init")
import_modules = Signal("import_modules")
celeryd_init = Signal("celeryd_init")
celeryd_after_setup = Signal("celeryd_after_setup")
worker_before_create_process = Signal("worker_before_create_process")
heartbeat_sent = Signal("heartbeat_sent")
# Never sent: Celery's deprecated task_sent (use after_task_publish), its eventlet pool's
# signals and its CLI's preload options. They exist so that code connecting them imports.
task_sent = Signal("task_sent")
user_preload_options = Signal("user_preload_options")
eventlet_pool_started = Signal("eventlet_pool_started")
eventlet_pool_preshutdown = Signal("eventlet_pool_preshutdown")
eventlet_pool_postshutdown = Signal("eventlet_pool_postshutdown")
eventlet_pool_apply = Signal("eventlet_pool_apply")

__all__ = [
    "Signal", "before_task_publish", "after_task_publish", "task_received", "task_prerun", "task_postrun",
    "task_success", "task_failure", "task_retry", "task_revoked", "task_rejected", "task_unknown",
    "task_internal_error", "worker_init", "worker_process_init", "worker_process_shutdown", "worker_ready",
    "worker_shutdown", "worker_shutting_down", "setup_logging", "after_setup_logger", "after_setup_task_logger",
    "beat_init", "beat_embedded_init", "import_modules", "celeryd_init", "celeryd_after_setup",
    "worker_before_create_process", "heartbeat_sent", "task_sent", "user_preload_options",
    "eventlet_pool_started", "eventlet_pool_preshutdown", "eventlet_pool_postshutdown", "eventlet_pool_apply",
]
