"""Publishing from an asyncio call: the message is built by the very code `apply_async()` runs.

`aapply_async()` runs the synchronous call path (options, routing, the protocol message,
a whole chain/group/chord) inside `captured()`: `Celeriac.publish` then hands the finished
messages to the capture instead of the blocking broker, and the coroutine publishes them on
its asyncio client. A context variable, so concurrent coroutines never see each other's
messages, and nothing else changes for synchronous callers.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from ..brokers.base import Outgoing


@dataclass
class Captured:
    """What one synchronous call path wanted to publish, in order."""

    messages: list[Outgoing] = field(default_factory=list)
    what: list[str] = field(default_factory=list)
    sent_events: bool = False

    def add(self, messages: Sequence[Outgoing], what: str, sent_events: bool) -> None:
        self.messages.extend(messages)
        self.what.append(what)
        self.sent_events = self.sent_events or sent_events

    def describe(self) -> str:
        return ", ".join(self.what) or "messages"


_current: contextvars.ContextVar[Captured | None] = contextvars.ContextVar("celeriac_capture", default=None)


def current() -> Captured | None:
    """The capture of the running asyncio call, or None (a normal, blocking publish)."""
    return _current.get()


@contextlib.contextmanager
def captured() -> Iterator[Captured]:
    box = Captured()
    token = _current.set(box)
    try:
        yield box
    finally:
        _current.reset(token)
