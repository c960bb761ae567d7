"""Looking for a reply before sleeping for it.

On a loopback or same-rack server a reply comes back in a few tens of microseconds - less
than it costs a thread that went to sleep in the kernel to be woken again (measured on a
2-core VM: a loopback round trip takes 65-70 µs when the thread blocks, 25 µs when it looks
at its socket until the reply is there). So a thread that has sent a command looks first,
for at most a budget (transport option `reply_spin_us`, 100 µs), then sleeps as
before. A server whose replies keep coming later than the budget (a distant one, or a
machine too busy to answer soon) turns the looking off for a while: it costs those at most
a few budgets per thousand calls. Commands that wait on purpose (BLPOP, BLMOVE, ...) never
look.

The look is a zero-timeout poll of the socket: nothing is read, redis-py's reader reads the
reply as always.
"""

from __future__ import annotations

import select
import time
from typing import Any, Callable

import redis

# Commands whose reply comes when something happens, not when Redis has done the work.
_WAITING = frozenset({"BLPOP", "BRPOP", "BLMOVE", "BRPOPLPUSH", "BZPOPMIN", "BZPOPMAX", "BLMPOP", "BZMPOP",
                      "XREAD", "XREADGROUP", "WAIT", "WAITAOF", "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE",
                      "MONITOR"})


class ReplySpin:
    """How long a thread that has sent a command looks for its reply before it sleeps (module docs).

    `budget_us` 0 turns it off. After `MISSES` looks in a row in which the reply came later
    than the budget, the next `REST` calls do not look (then it tries again)."""

    MISSES = 4
    REST = 1000

    def __init__(self, budget_us: float) -> None:
        self.budget_ns = int(budget_us * 1000)
        self.misses = 0
        self.resting = 0
        self._poller: Any = None
        self._fd = -1

    def wait(self, conn: Any) -> None:
        """Return once a reply is readable on `conn`'s socket, or the budget is spent; the
        reply itself is left for redis-py's reader (a zero-timeout poll only looks)."""
        sock = getattr(conn, "_sock", None)
        if self.budget_ns <= 0 or sock is None or not hasattr(select, "poll"):
            return
        if self.resting:
            self.resting -= 1
            return
        poll = self._poller_for(sock.fileno())
        deadline = time.perf_counter_ns() + self.budget_ns
        while not poll(0):
            if time.perf_counter_ns() >= deadline:
                self.misses += 1
                if self.misses >= self.MISSES:
                    self.misses, self.resting = 0, self.REST
                return
        self.misses = 0

    def _poller_for(self, fd: int) -> Callable[[int], list[Any]]:
        if fd != self._fd:  # a new connection: watch its socket instead
            self._poller = select.poll()
            self._poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
            self._fd = fd
        return self._poller.poll  # type: ignore[no-any-return]


class LookingConnection(redis.Connection):
    """redis-py's TCP connection that looks for a reply before sleeping for it (module docs)."""

    def __init__(self, *args: Any, reply_spin_us: float = 100, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call, unused-ignore]
        self._spin = ReplySpin(reply_spin_us)
        self._look = False

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call, unused-ignore]
        self._look = True  # a pipeline's commands, or one command (send_command decides below)

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        super().send_command(*args, **kwargs)  # type: ignore[no-untyped-call, unused-ignore]
        name = args[0] if args else b""
        name = name.decode() if isinstance(name, bytes) else str(name)
        self._look = name.upper() not in _WAITING

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        if self._look:
            self._look = False  # the first reply read: the rest of a pipeline's are there or close
            self._spin.wait(self)
        return super().read_response(*args, **kwargs)
