"""Which transport serves what: the broker where it can, else the result store.

Worker liveness (heartbeats and the list of live workers), the event stream and beat's
schedule store each live in the broker when it has one (SQLite, Redis, the memory
broker) and otherwise in the result store (RabbitMQ keeps no such state). That choice is
made here, once, for every module that needs it (`app.capabilities`); so is whether a
broker URL can keep the results too when no result backend is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from .app import Celeriac
    from .brokers.base import EventChannel, Publisher, ScheduleStore


def keeps_results(url: str) -> bool:
    """A broker URL whose server can also keep the results (the default result store then)."""
    from . import transports
    transport = transports.for_url(url)
    return transport is not None and transport.results is not None


class Capabilities:
    """The broker's, else the result store's: read through the app on every call, so a
    reconfigured app (new URLs) is followed, and the result store is only opened when needed."""

    def __init__(self, app: "Celeriac") -> None:
        self.app = app

    def heartbeat(self, worker_id: str, ttl: float, info: dict[str, Any]) -> None:
        """The worker is alive for `ttl` more seconds; the broker's lease is renewed in any case."""
        broker = self.app.broker
        broker.heartbeat(worker_id, ttl, info)
        if not broker.tracks_workers:
            self.app.backend.worker_heartbeat(worker_id, ttl, info)

    def forget_worker(self, worker_id: str) -> None:
        """A worker that stopped is no longer listed as alive (the broker's own record goes with
        its lease, `broker.unregister`)."""
        if not self.app.broker.tracks_workers:
            self.app.backend.worker_heartbeat(worker_id, 0, None)

    def live_workers(self) -> dict[str, dict[str, Any]]:
        broker = self.app.broker
        return broker.live_workers() if broker.tracks_workers else self.app.backend.live_workers()

    def event_channel(self) -> "EventChannel":
        app = self.app
        channel = app.broker.event_channel() or app.backend.event_channel()
        if channel is None:
            raise ImproperlyConfigured(
                f"events need a shared stream: neither the broker ({app.broker.safe_url}) nor the result store "
                f"({app.backend.safe_url}) carries one - use SQLite or Redis for one of them")
        return channel

    def schedule_store(self, name: str, publish: "Publisher") -> "ScheduleStore":
        app = self.app
        store = app.broker.schedule_store(name, publish)
        if store is None:
            store = app.backend.schedule_store(name, publish)
        if store is None:
            raise ImproperlyConfigured(
                f"beat keeps its state in the broker's store (SQLite or Redis) or, with {app.broker.safe_url}, in "
                f"the result store, and {app.backend.safe_url} is not shared between processes: set "
                "result_backend to a redis:// or sqlite:// URL")
        return store
