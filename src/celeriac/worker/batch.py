"""The writes a pool slot owes the broker and the result store, made together.

Results, follow-up messages, chord memberships, dead letters, released and acked
messages are collected here and written in one go (one transaction where the broker has
them): a result is always stored before its message is acked, so a crash in between
re-runs the task (at-least-once) and never loses its outcome.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .. import signals
from ..backends import StoredResult
from ..backends.base import ChordPart
from ..brokers import Delivery, Outgoing
from ..exceptions import OperationalError
from . import workflow

if TYPE_CHECKING:
    from ..app import Celeriac

logger = logging.getLogger("celeriac.worker")

FLUSH_AFTER = 0.005  # seconds a finished result may wait to be written with later ones


@dataclass
class Batch:
    """Outcomes waiting to be written: publish retries, store results, then ack."""

    app: "Celeriac"
    publishes: list[Outgoing] = field(default_factory=list)
    results: list[StoredResult] = field(default_factory=list)
    acks: list[Delivery] = field(default_factory=list)
    dead: list[tuple[Delivery, str]] = field(default_factory=list)
    releases: list[Delivery] = field(default_factory=list)
    chord_parts: list[ChordPart] = field(default_factory=list)
    unique_done: list[tuple[str, str]] = field(default_factory=list)  # (unique key, task id) to let go of
    since: float = 0.0
    # The slot's next claim, made in the same transaction as these writes where the broker
    # can (broker.claim_at_commit): set before the last flush of a batch, consumed by it.
    claim_next: Callable[[Any], Callable[[], list[Delivery]] | None] | None = None
    claimed: list[Delivery] = field(default_factory=list)
    claim_lost: bool = False  # a flush that carried a claim failed: its reply may have been lost

    def __len__(self) -> int:
        return (len(self.acks) + len(self.dead) + len(self.releases) + len(self.results) + len(self.chord_parts)
                + len(self.unique_done))

    def mark(self) -> None:
        if not self.since:
            self.since = time.monotonic()

    def due(self) -> bool:
        return bool(self.since) and time.monotonic() - self.since >= FLUSH_AFTER

    def flush(self, stopping: Callable[[], bool] = lambda: False) -> None:
        """Write everything; on broker trouble keep retrying (the messages stay leased to us)."""
        delay = 0.1
        while len(self) or self.publishes:
            claim: Callable[[], list[Delivery]] | None = None
            try:
                broker, backend = self.app.broker, self.app.backend
                if broker.transactional:  # one commit for the batch; forget nothing until it lands
                    with broker.transaction():
                        self._write_all(broker, backend, forget_as_written=False)
                        claim = self.claim_next(broker) if self.claim_next is not None else None
                    self._forget()
                    if claim is not None:
                        self.claimed, self.claim_next = claim(), None
                else:
                    self._write_all(broker, backend, forget_as_written=True)
            except OperationalError as exc:
                self.claim_lost = self.claim_lost or claim is not None
                if stopping():
                    logger.error("could not write %d outcome(s) before stopping (%s); their messages "
                                 "will be delivered again", len(self), exc)
                    raise
                logger.warning("could not write task outcomes, retrying in %.1fs: %s", delay, exc)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.since = 0.0

    def _write_all(self, broker: Any, backend: Any, forget_as_written: bool) -> None:
        # Order matters: results are stored first, so that whoever a follow-up message reaches
        # (the next step of a chain, a callback) already finds this task's outcome and children;
        # follow-ups are published and chord members recorded before the messages are acked, and
        # a chord they complete has its body published before the completing header is acked.
        # Unique keys are let go of just before the results are stored, so a client that sees
        # the final result can send the same call again at once.
        steps: list[tuple[str, Callable[[Any], None]]] = [
            ("unique_done", backend.release_unique),
            ("results", backend.store), ("publishes", self._publish), ("chord_parts", self._record_chords),
            ("dead", broker.dead_letter), ("releases", broker.release), ("acks", broker.ack)]
        for name, write in steps:
            items = getattr(self, name)
            if items:
                write(items)
                if forget_as_written:
                    setattr(self, name, [])

    def _publish(self, messages: list[Outgoing]) -> None:
        """What tasks sent on (chain steps, callbacks, retries, chord bodies): like any client,
        a worker sends task-sent for them when `task_send_sent_event` is on."""
        self.app.broker.publish(messages)
        if signals.after_task_publish.receivers:
            self.app._announce_published(messages)
        if self.app.conf.task_send_sent_event:
            self.app._send_sent_events(messages)

    def _record_chords(self, parts: list[ChordPart]) -> None:
        app = self.app
        publishes: list[Outgoing] = []
        results: list[StoredResult] = []

        def store(task_id: str, state: str, value: Any, traceback: str | None, name: str | None) -> None:
            results.append(workflow.encode_outcome(app, task_id, state, value, name=name, traceback=traceback))

        while parts:  # a chord that fails can fail a chord it belongs to: round after round
            more: list[ChordPart] = []
            for fired in app.backend.chord_parts_done(parts):
                workflow.fire_chord(app, fired, publishes, store, more)
            parts = more
        if publishes:
            self._publish(publishes)
        if results:
            app.backend.store(results)

    def _forget(self) -> None:
        self.publishes, self.results, self.dead, self.releases, self.acks = [], [], [], [], []
        self.chord_parts, self.unique_done = [], []
