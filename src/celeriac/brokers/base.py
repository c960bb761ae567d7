"""The broker interface: everything above it is written once, for every broker.

What every broker guarantees:
- At-least-once: a fetched message is *leased* to an owner (one pool slot of one worker)
  and leaves the broker only on `ack`. `fetch` never deletes.
- Liveness, not visibility timeouts: a worker renews its lease with `heartbeat`; only
  messages held by a worker whose lease ran out are given back (`recover`), so a slow
  task on a live worker is never delivered twice.
- Delayed messages (`eta`) are kept by the broker and become fetchable when due.
- Priorities 0-9, higher first; FIFO within a priority.
- Every delivery counts: `Delivery.deliveries` lets the worker send poison messages to
  the dead-letter store instead of crashing forever.
- Batches: publish, fetch and ack take many messages per round trip.
"""

from __future__ import annotations

import re
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

if TYPE_CHECKING:
    from ..protocol import TaskMessage

from .. import protocol

MIN_PRIORITY = 0
MAX_PRIORITY = 9


def clamp_priority(priority: int | None) -> int:
    if priority is None:
        return 0
    return max(MIN_PRIORITY, min(MAX_PRIORITY, int(priority)))


@dataclass(slots=True)
class Outgoing:
    """A message to publish: the packed bytes and where/when it should be delivered."""

    queue: str
    payload: bytes
    priority: int = 0
    eta: float | None = None  # epoch seconds; None (or past) = deliverable now
    # The message `payload` was packed from, when the publisher has it at hand: a broker that
    # writes another layout too (Redis: kombu's envelope for Celery) reads it from here
    # instead of decoding the payload again. Whoever changes `payload` sets it to match, or None.
    message: "TaskMessage | None" = field(default=None, compare=False, repr=False)


@dataclass(slots=True)
class Delivery:
    """A message leased to one owner; `tag` is the broker's handle for ack/release."""

    tag: str
    queue: str
    payload: bytes
    deliveries: int
    priority: int = 0
    owner: str = ""  # "<worker id>/<slot>": who holds the lease


@dataclass(slots=True)
class DeadLetter:
    id: str
    queue: str
    payload: bytes
    reason: str
    at: float
    deliveries: int


@dataclass(slots=True)
class Tick:
    """One tick of a periodic-task entry: its scheduled instant is its identity."""

    entry: str
    at: float  # epoch seconds
    message: Outgoing | None  # None: record the tick as handled without sending anything (skipped)


@dataclass(slots=True)
class LeaseState:
    holder: str | None
    token: int
    expires_in: float  # seconds; <= 0 when nobody holds it


class ScheduleStore(ABC):
    """Where beat replicas keep who leads (a lease with a fencing token) and, per entry, the
    last tick handled. `fire` is the only write of ticks, and it is fenced: it writes only
    while the caller's lease (holder and token) is current, and records a tick only if it is
    newer than the entry's last one - so a tick is published once however many beats run."""

    @abstractmethod
    def lease(self, holder: str, ttl: float) -> int | None:
        """Take or renew the lead for `ttl` seconds: the fencing token, or None if another
        holder's lease is current. The token changes whenever the lead changes hands."""

    @abstractmethod
    def release(self, holder: str) -> None:
        """Give up the lead (a clean stop), so a standby takes over without waiting."""

    @abstractmethod
    def lease_state(self) -> LeaseState:
        """Who leads now (for `beat --list` and logs)."""

    @abstractmethod
    def last_ticks(self) -> dict[str, float]:
        """Entry name -> the instant of the last tick handled."""

    @abstractmethod
    def fire(self, holder: str, token: int, ticks: Sequence[Tick]) -> list[str] | None:
        """Publish the ticks' messages and record them, atomically where the store shares the
        broker's file or server. Returns the entries recorded (a tick already recorded by
        someone else is left out), or None when the lease is no longer the caller's."""

    def recover(self) -> int:
        """A new leader's first act: finish what a dead leader claimed but may not have
        published (only where claim and publish are two steps). Returns messages re-sent."""
        return 0


def frame_events(events: Sequence[bytes]) -> bytes:
    """Several events as one blob (each prefixed with its length): a batch is one stream
    entry or message, however many events it holds."""
    return b"".join(struct.pack(">I", len(body)) + body for body in events)


def unframe_events(data: bytes) -> list[bytes]:
    out, offset, size = [], 0, len(data)
    while offset + 4 <= size:
        (length,) = struct.unpack_from(">I", data, offset)
        out.append(bytes(data[offset + 4: offset + 4 + length]))
        offset += 4 + length
    return out


class EventSubscription(ABC):
    """One reader of the event stream, from the moment it subscribed on."""

    missed: int = 0  # events that were dropped by retention before this reader got to them

    @abstractmethod
    def next_batch(self, timeout: float) -> list[bytes]:
        """The events published since the last call (oldest first), waiting up to `timeout`
        seconds for at least one; [] when none came."""

    def close(self) -> None:
        """Stop reading (optional)."""


class EventChannel(ABC):
    """Task and worker events: a bounded stream, written in batches and read by monitors.
    Old events are dropped (retention), never the worker's time: `send` is one round trip."""

    @abstractmethod
    def send(self, events: Sequence[bytes]) -> None:
        """Append serialized events (one round trip)."""

    @abstractmethod
    def subscribe(self) -> EventSubscription:
        """A reader that sees the events sent from now on."""


# The publish function a schedule store calls when it cannot publish by itself.
Publisher = Callable[[Sequence[Outgoing]], None]


class Broker(ABC):
    """Small on purpose: publish, fetch (a lease), ack, release, dead-letter, liveness."""

    schemes: ClassVar[tuple[str, ...]] = ()
    # True when transaction() really groups writes (and rolls all back on failure).
    transactional: ClassVar[bool] = False
    # Whether heartbeat()/live_workers() keep a list of live workers (RabbitMQ cannot: its
    # workers then also beat into the result store, so that `inspect` and monitors see them).
    tracks_workers: ClassVar[bool] = True

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.options = dict(options or {})

    @property
    def safe_url(self) -> str:
        return safe_url(self.url)

    @abstractmethod
    def publish(self, messages: Sequence[Outgoing]) -> None:
        """Store messages durably (all of them, in one round trip where possible)."""

    @abstractmethod
    def fetch(self, queues: Sequence[str], worker_id: str, owner: str, limit: int,
              timeout: float, in_flight: int = 0) -> list[Delivery]:
        """Lease up to `limit` due messages to `owner`, highest priority first.

        Blocks up to `timeout` seconds when none is available and returns [] then, so the
        caller's loop gets control back for its housekeeping. `in_flight` says how many of
        this owner's earlier messages are still running (async tasks): a broker that caps
        unacked messages per consumer (RabbitMQ's prefetch) must leave room for them.
        """

    @abstractmethod
    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """The tasks finished (their outcome is stored): remove the messages."""

    @abstractmethod
    def release(self, deliveries: Sequence[Delivery]) -> None:
        """Give unstarted messages back; this delivery does not count against them."""

    @abstractmethod
    def requeue_owner(self, owner: str, running_tag: str | None, keep_all_counts: bool = False) -> int:
        """An owner (pool slot) died: give back all it held.

        The message it was running keeps its delivery count (it may be what killed the
        process); the others were never started and lose it - unless `keep_all_counts`
        (several tasks were running, e.g. async ones, and any of them may be guilty).
        """

    @abstractmethod
    def dead_letter(self, items: Sequence[tuple[Delivery, str]]) -> None:
        """Move messages to the dead-letter store with the reason, and ack them."""

    @abstractmethod
    def heartbeat(self, worker_id: str, ttl: float, info: dict[str, Any] | None = None) -> None:
        """Renew the lease of a live worker for `ttl` seconds."""

    @abstractmethod
    def unregister(self, worker_id: str) -> int:
        """A worker stops: drop its lease and give back whatever it still holds."""

    @abstractmethod
    def recover(self) -> int:
        """Give back messages held by workers whose lease expired (they died)."""

    @abstractmethod
    def purge(self, queues: Sequence[str]) -> int:
        """Delete ready and delayed messages of these queues; returns how many."""

    @abstractmethod
    def queue_sizes(self, queues: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        """Per queue: ready, reserved (leased) and delayed counts."""

    def oldest_waiting(self, queues: Sequence[str]) -> dict[str, float]:
        """When the oldest message waiting (ready) on each queue was sent, as epoch seconds;
        queues with none, or where the broker cannot tell without taking a message (RabbitMQ),
        are left out."""
        return {}

    @abstractmethod
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest dead letters, newest first."""

    @abstractmethod
    def requeue_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        """Put dead letters (all, or these ids) back on their queues."""

    @abstractmethod
    def live_workers(self) -> dict[str, dict[str, Any]]:
        """Workers whose lease is current, with what they said in their heartbeat."""

    def held_messages(self, worker_id: str) -> list[tuple[str, bytes]] | None:
        """(owner, payload) of the messages this worker holds (running or prefetched), for
        `inspect reserved`; None where the broker cannot tell (RabbitMQ)."""
        return None

    def schedule_store(self, name: str, publish: Publisher) -> ScheduleStore | None:
        """Beat's state kept beside the messages, so a tick's publish and its record commit
        together; None where the broker keeps no state (RabbitMQ: the result store then)."""
        return None

    def event_channel(self) -> EventChannel | None:
        """Where task and worker events travel; None where the broker has no stream of its
        own (the result store's is used then)."""
        return None

    def take_over_connections(self) -> None:
        """This process is about to end while the thread that used this broker is stuck (a task
        past its hard time limit): let the calling thread use its connections for a last ack."""

    def transaction(self) -> Any:
        """A context in which several writes commit together, where the broker can (SQLite:
        a batch's results and acks in one transaction when they share the file)."""
        import contextlib
        return contextlib.nullcontext()

    def prepare(self, queues: Sequence[str]) -> None:
        """Make the queues a worker consumes exist before it says it is ready (optional: where a
        queue exists once written to, nothing needs doing). A client of another program - Celery -
        publishing to a queue only its consumers declare would otherwise lose what it sends."""

    def claim_at_commit(self, queues: Sequence[str], worker_id: str, owner: str,
                        limit: int) -> Callable[[], list[Delivery]] | None:
        """Inside `transaction()`: claim up to `limit` more messages in that transaction, with
        the batch's outcomes (one round trip and one commit for both). Returns what gives the
        claimed deliveries once the transaction has committed, or None where the broker
        cannot (the worker then fetches as usual)."""
        return None

    def claim_now(self, queues: Sequence[str], worker_id: str, owner: str, limit: int) -> list[Delivery] | None:
        """Claim up to `limit` messages at once, without waiting and without a commit that waits
        for the disk (a claim lost with the server only makes its messages claimable again), or
        None where the broker cannot. Where it can, a busy pool slot claims its next batch with
        this and lets the finished outcomes wait for one commit with later ones (at most
        worker.batch.FLUSH_AFTER), instead of one commit per prefetch-sized batch."""
        return None

    def housekeeping(self) -> None:
        """Periodic upkeep, run by each worker's supervisor every heartbeat (optional)."""

    def upgrade_legacy_layout(self) -> int:
        """Move messages an earlier version left in another layout into this one (a worker's
        start, before it fetches; idempotent). Returns how many moved (optional)."""
        return 0

    def close(self) -> None:
        """Release connections (optional)."""


_PASSWORD = re.compile(r"(?P<head>[a-z0-9+.-]+://[^:/@]*:)(?P<pw>[^@/]*)(?P<at>@)", re.IGNORECASE)


def oldest_of(heads: dict[str, list[bytes]]) -> dict[str, float]:
    """Per queue, the earliest send time among these messages (those that carry one)."""
    oldest: dict[str, float] = {}
    for queue, payloads in heads.items():
        times = [t for t in map(protocol.sent_at, payloads) if t is not None]
        if times:
            oldest[queue] = min(times)
    return oldest


def safe_url(url: str | None) -> str:
    """The URL with its password replaced by ``**``: the only form logs and errors show."""
    if not url:
        return ""
    return _PASSWORD.sub(lambda m: f"{m.group('head')}**{m.group('at')}", url)
