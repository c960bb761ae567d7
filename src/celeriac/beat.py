"""celeriac beat: sends periodic tasks, each tick exactly once, however many replicas run.

Every tick of an entry has an identity, its scheduled instant. The store (the broker's
SQLite file or Redis server; the result store under RabbitMQ) keeps, per entry, the last
tick handled, and a lease naming the one beat that leads. Only the leader sends, and its
send is fenced: the store records a tick and publishes its message in one step, and only
while the leader's lease (holder and fencing token) is still current and the tick is newer
than the entry's last one. A second or third beat waits as a standby and takes over when
the lease runs out; it starts from the recorded ticks, so it neither repeats nor skips one.

Late and missed ticks: a tick sent less than `beat_missed_after` seconds after its time is
simply late (a replica taking over, a restart) and is sent on its own. Ticks older than
that were missed while no beat ran; the entry's `missed` policy says what happens to them:
"run_once" (default: one run now stands for all of them) or "skip".
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any, Sequence

from . import signals
from .brokers.base import Outgoing, ScheduleStore, Tick
from .exceptions import ImproperlyConfigured
from .schedules import BaseSchedule, schedule, timezone_named, to_schedule

if TYPE_CHECKING:
    from .app import Celeriac

logger = logging.getLogger("celeriac.beat")

MISSED_POLICIES = ("run_once", "skip")
_TICK_NAMESPACE = uuid.UUID("6c1f4a63-9f3e-4f0e-9d55-3b7cbe1e5a10")
_MAX_TICKS_PER_ENTRY = 1000  # per pass: a long backlog of late ticks goes out in bounded batches


@dataclass
class Entry:
    """One line of the beat schedule."""

    name: str
    task: str
    schedule: BaseSchedule
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    missed: str = "run_once"

    @classmethod
    def from_config(cls, name: str, spec: Any, default_missed: str) -> "Entry":
        if not isinstance(spec, dict):
            raise ImproperlyConfigured(f"beat_schedule[{name!r}] must be a dict with 'task' and 'schedule', "
                                       f"not {type(spec).__name__}")
        unknown = set(spec) - {"task", "schedule", "args", "kwargs", "options", "missed", "relative"}
        if unknown:
            raise ImproperlyConfigured(f"beat_schedule[{name!r}]: unknown key(s) {sorted(unknown)}; known: task, "
                                       "schedule, args, kwargs, options, missed")
        if not spec.get("task") or "schedule" not in spec:
            raise ImproperlyConfigured(f"beat_schedule[{name!r}] needs 'task' (a task name) and 'schedule' "
                                       "(seconds, a timedelta, schedule(...) or crontab(...))")
        if "task_id" in dict(spec.get("options") or {}):
            raise ImproperlyConfigured(f"beat_schedule[{name!r}]: options may not set task_id (each tick gets "
                                       "its own, derived from the entry and the tick)")
        missed = spec.get("missed", default_missed)
        if missed not in MISSED_POLICIES:
            raise ImproperlyConfigured(f"beat_schedule[{name!r}]: missed={missed!r}; use 'run_once' or 'skip'")
        try:
            when = to_schedule(spec["schedule"])
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"beat_schedule[{name!r}]: {exc}") from exc
        task = spec["task"]
        return cls(name, str(getattr(task, "name", task)), when, tuple(spec.get("args") or ()),
                   dict(spec.get("kwargs") or {}), dict(spec.get("options") or {}), missed)


def load_entries(app: "Celeriac") -> dict[str, Entry]:
    """`beat_schedule` plus what `app.add_periodic_task` added (on_after_configure runs first)."""
    app.finalize()
    conf = app.conf
    default_missed = conf.beat_missed_policy or "run_once"
    if default_missed not in MISSED_POLICIES:
        raise ImproperlyConfigured(f"beat_missed_policy={default_missed!r}; use 'run_once' or 'skip'")
    specs = dict(conf.beat_schedule or {})
    for added in app._periodic:
        specs[added["name"]] = added["spec"]
    return {name: Entry.from_config(name, spec, default_missed) for name, spec in specs.items()}


def schedule_store(app: "Celeriac", name: str) -> ScheduleStore:
    # Beat sends task-sent for what it fired itself (stores that publish in their own
    # transaction or script never call this), so the publisher does not send them again.
    def publish(messages: Sequence[Outgoing]) -> None:
        app.publish(messages, what="periodic tasks", sent_events=False)

    return app.capabilities.schedule_store(name, publish)


def tick_task_id(beat_name: str, entry: str, at: float) -> str:
    """The same tick always gets the same task id: a duplicate could never pass unnoticed."""
    return str(uuid.uuid5(_TICK_NAMESPACE, f"{beat_name}\0{entry}\0{at!r}"))


class Beat:
    """The scheduler loop; `run()` until `stop()` (or a signal handler sets the stop event)."""

    def __init__(self, app: "Celeriac", *, holder: str | None = None, lease_timeout: float | None = None,
                 max_interval: float | None = None) -> None:
        conf = app.conf
        self.app = app
        self.name = str(conf.beat_name or app.main or "celeriac")
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_timeout = float(lease_timeout or conf.beat_lease_timeout)
        self.max_interval = float(max_interval or conf.beat_max_loop_interval)
        missed_after = conf.beat_missed_after
        self.missed_after = float(missed_after) if missed_after is not None else 2 * self.lease_timeout
        self.tz: tzinfo = timezone_named(conf.timezone)
        self.entries = load_entries(app)
        self.store = schedule_store(app, self.name)
        self.token: int | None = None
        self._renew_at = 0.0
        self._leased_at = 0.0
        self._last: dict[str, float] = {}
        self._stop = threading.Event()
        self.sent = 0

    # --- the loop ---

    def run(self) -> None:
        signals.beat_init.send(sender=self)
        logger.info("beat %s: %d entr%s, time zone %s, lease %.0fs; waiting for the lead", self.holder,
                    len(self.entries), "y" if len(self.entries) == 1 else "ies", self.tz, self.lease_timeout)
        try:
            while not self._stop.is_set():
                try:
                    wait = self.tick()
                except Exception as exc:  # the store is unreachable: keep trying, say so
                    logger.error("beat: %s; retrying in %.0fs", exc, min(self.lease_timeout / 3, 5.0))
                    self.token = None
                    wait = min(self.lease_timeout / 3, 5.0)
                self._stop.wait(wait)
        finally:
            if self.token is not None:
                try:
                    self.store.release(self.holder)
                    logger.info("beat %s: stopped and handed over the lead", self.holder)
                except Exception as exc:  # the lease then simply runs out
                    logger.warning("beat %s: could not release the lead (%s); a standby takes over when it "
                                   "expires in %.0fs", self.holder, exc, self.lease_timeout)

    def stop(self) -> None:
        self._stop.set()

    def tick(self, now: float | None = None) -> float:
        """One pass: keep or take the lead, send what is due. Returns seconds to sleep."""
        now = time.time() if now is None else now
        if self.token is None or now >= self._renew_at:
            if not self._take_lead(now):
                return min(1.0, self.lease_timeout / 5)
        assert self.token is not None
        ticks = self.due_ticks(now)
        if ticks:
            fired = self.store.fire(self.holder, self.token, ticks)
            if fired is None:
                logger.warning("beat %s: lost the lead before sending %d tick(s); another beat sends them",
                               self.holder, len(ticks))
                self.token = None
                return 0.0
            self._recorded(ticks, fired)
        next_due = min((self._next(entry) for entry in self.entries.values()), default=now + self.max_interval)
        return max(0.0, min(next_due, self._renew_at, now + self.max_interval) - time.time())

    def _take_lead(self, now: float) -> bool:
        token = self.store.lease(self.holder, self.lease_timeout)
        if token is None:
            if self.token is not None:
                logger.warning("beat %s: another beat took the lead; standing by", self.holder)
            self.token = None
            return False
        if token != self.token:
            if self.token is not None:  # our own lease lapsed and nobody else took it meanwhile
                logger.warning("beat %s: lost the lead - its %.0fs lease ran out, %.1fs after it was last renewed "
                               "(this process or the schedule store stalled); taking it again", self.holder,
                               self.lease_timeout, now - self._leased_at)
            resent = self.store.recover()
            self._last = self.store.last_ticks()
            logger.info("beat %s: leading (fencing token %d)%s", self.holder, token,
                        f"; re-sent {resent} tick(s) a previous leader had claimed" if resent else "")
        self.token = token
        self._leased_at = now
        self._renew_at = now + self.lease_timeout / 3
        return True

    def _next(self, entry: Entry) -> float:
        last = self._last.get(entry.name)
        return time.time() if last is None else entry.schedule.next_after(last, self.tz)

    def due_ticks(self, now: float) -> list[Tick]:
        ticks: list[Tick] = []
        for entry in self.entries.values():
            last = self._last.get(entry.name)
            if last is None:  # first sight: the schedule starts now (recorded, so a restart keeps it)
                ticks.append(Tick(entry.name, now, None))
                continue
            at = entry.schedule.next_after(last, self.tz)
            if at > now:
                continue
            if now - at > self.missed_after:
                ticks.append(self._missed(entry, last, at, now))
                at = entry.schedule.next_after(ticks[-1].at, self.tz)
            count = 0
            while at <= now and count < _MAX_TICKS_PER_ENTRY:
                ticks.append(Tick(entry.name, at, self._message_or_none(entry, at)))
                at = entry.schedule.next_after(at, self.tz)
                count += 1
        return ticks

    def _message_or_none(self, entry: Entry, at: float) -> Any:
        try:
            return self.message(entry, at)
        except Exception as exc:  # one entry's bad arguments must not stop the others
            logger.error("beat: cannot send %s (%s) for its tick at %s: %s: %s; this tick is skipped - fix the "
                         "entry", entry.name, entry.task, _local(at, self.tz), type(exc).__name__, exc)
            return None

    def _missed(self, entry: Entry, last: float, first_missed: float, now: float) -> Tick:
        horizon = now - self.missed_after
        # The tick that stands for all missed ones: for an interval the newest missed tick keeps
        # its phase; a crontab's next tick follows from any instant.
        stand_in = entry.schedule.last_at_or_before(last, horizon) if isinstance(entry.schedule, schedule) \
            else horizon
        when = _local(first_missed, self.tz)
        if entry.missed == "skip":
            logger.warning("beat: %s (%s) missed its runs since %s while no beat ran; skipping them (missed='skip')",
                           entry.name, entry.task, when)
            return Tick(entry.name, stand_in, None)
        logger.warning("beat: %s (%s) missed its runs since %s while no beat ran; running it once now",
                       entry.name, entry.task, when)
        return Tick(entry.name, stand_in, self._message_or_none(entry, stand_in))

    def message(self, entry: Entry, at: float) -> Any:
        options = dict(entry.options)
        headers = {**dict(options.pop("headers", None) or {}), "periodic_task_name": entry.name,
                   "periodic_tick": at}
        outgoing, _msg = self.app.prepare_task(entry.task, entry.args, entry.kwargs,
                                               task_id=tick_task_id(self.name, entry.name, at),
                                               headers=headers, **options)
        return outgoing

    def _recorded(self, ticks: list[Tick], fired: list[str]) -> None:
        remaining = list(fired)
        sent: list[Outgoing] = []
        for tick in ticks:
            if tick.entry in remaining:
                remaining.remove(tick.entry)
                self._last[tick.entry] = max(tick.at, self._last.get(tick.entry, tick.at))
                if tick.message is not None:
                    self.sent += 1
                    sent.append(tick.message)
                    logger.info("beat: sending due task %s (%s) [%s, id %s]", tick.entry,
                                self.entries[tick.entry].task, _local(tick.at, self.tz),
                                tick_task_id(self.name, tick.entry, tick.at))
        if sent and self.app.conf.task_send_sent_event:
            self.app._send_sent_events(sent)
        if sent and signals.after_task_publish.receivers:  # here for the same reason as task-sent
            self.app._announce_published(sent)
        if len(fired) < len(ticks):  # another beat recorded some of them: trust the store
            self._last = self.store.last_ticks()

    # --- for `beat --list` ---

    def listing(self) -> list[dict[str, Any]]:
        last_ticks = self.store.last_ticks()
        now = time.time()
        rows = []
        for entry in self.entries.values():
            last = last_ticks.get(entry.name)
            next_at = entry.schedule.next_after(last if last is not None else now, self.tz)
            rows.append({"name": entry.name, "task": entry.task, "schedule": entry.schedule.human(),
                         "last": _local(last, self.tz) if last is not None else None,
                         "next": _local(max(next_at, now), self.tz), "due_in": max(0.0, next_at - now),
                         "missed": entry.missed, "options": entry.options})
        return rows


def _local(at: float, tz: tzinfo) -> str:
    return datetime.fromtimestamp(at, tz).isoformat(sep=" ", timespec="seconds")


def embedded_beat(app: "Celeriac") -> tuple[Beat, threading.Thread]:
    """`worker -B`: the scheduler as a thread of the worker's supervisor process."""
    beat = Beat(app)
    thread = threading.Thread(target=beat.run, name="celeriac-beat", daemon=True)
    return beat, thread


__all__ = ["Beat", "Entry", "MISSED_POLICIES", "embedded_beat", "load_entries", "schedule_store", "tick_task_id"]
