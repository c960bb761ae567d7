"""The pool processes of one worker, woken together, claim once.

Every NOTIFY of a queue reaches every listening process, so a message published to an idle
worker of N pool processes woke all N and each ran a claim: one found the message, N-1 found
nothing, and each of those cost the database a statement and the machine the CPU of it.

Processes forked from one worker share this module's state (made at import, before the
fork): the monotonic time at which the newest claim that *drained* the queues (it came back
with fewer messages than it asked for) started, per queue set. A claim's snapshot is taken
after it started, and a notification arrives after its message was committed, so a process
woken only by notifications that arrived before such a claim started has nothing to find:
that claim saw those messages (and took them, or they were taken by others). Siblings woken
together take turns through a lock (a POSIX record lock, which the kernel releases when its
holder is killed, plus a thread lock for the thread pool), so the second one looks after the
first one's claim. Every wait is bounded: a sibling that cannot get the lock within
LOCK_WAIT (a holder's connection may have died silently) claims on its own, as before, and
a skipped process still claims on its own timer (the consumer's next fetch, within a
second). Processes that do not share a fork (the spawn
start method, other workers) each keep their own state: they claim as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import struct
import tempfile
import threading
import time
import zlib
from typing import Iterator, Sequence

LOCK_WAIT = 0.05  # seconds a woken process waits for a sibling's claim before claiming on its own
_FIRST_PAUSE = 0.0005  # seconds before the second try of the process lock (then doubling)
_LAYOUT = struct.Struct("qqd")  # sequence (odd while written), queue-set key, monotonic start of the draining claim


class Siblings:
    def __init__(self) -> None:
        self._shared = mmap.mmap(-1, _LAYOUT.size)  # anonymous and shared: the same pages after fork
        self._file = tempfile.TemporaryFile()  # what the process lock locks (record locks are per process)
        self._thread_lock = threading.Lock()
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._thread_lock = threading.Lock()  # a fork may copy it held by a thread the child does not have

    @staticmethod
    def key(conninfo: str, queues: Sequence[str]) -> int:
        return zlib.crc32("\0".join([conninfo, *sorted(queues)]).encode()) or 1

    def _read(self) -> tuple[int, float]:
        while True:  # a seqlock: retry a read that overlapped a write
            before, key, started = _LAYOUT.unpack_from(self._shared)
            after = _LAYOUT.unpack_from(self._shared)[0]
            if before == after and not before & 1:
                return key, started

    def drained_since(self, key: int, notified_at: float) -> bool:
        """Did a claim of these queues that started after `notified_at` find them drained?"""
        shared_key, started = self._read()
        return shared_key == key and started > notified_at

    def mark_drained(self, key: int, started: float) -> None:
        """Record a draining claim; only while holding the lock (one writer at a time)."""
        sequence, shared_key, shared_started = _LAYOUT.unpack_from(self._shared)
        if shared_key == key and shared_started >= started:
            return  # a newer draining claim is already recorded
        _LAYOUT.pack_into(self._shared, 0, sequence + 1, shared_key, shared_started)
        _LAYOUT.pack_into(self._shared, 0, sequence + 1, key, started)
        _LAYOUT.pack_into(self._shared, 0, sequence + 2, key, started)

    @contextlib.contextmanager
    def claiming(self) -> Iterator[bool]:
        """Take the claim turn, waiting at most LOCK_WAIT; yields whether it was taken."""
        deadline = time.monotonic() + LOCK_WAIT
        if not self._thread_lock.acquire(timeout=LOCK_WAIT):
            yield False
            return
        try:
            pause = _FIRST_PAUSE
            while True:
                try:
                    fcntl.lockf(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    # A blocking lock would wait as long as the holder's claim: unbounded on a
                    # connection that died silently. A few growing pauses instead (a claim takes
                    # about half a millisecond), so the waiting process costs no CPU meanwhile.
                    if time.monotonic() + pause > deadline:
                        yield False
                        return
                    time.sleep(pause)
                    pause = min(2 * pause, 0.008)
            try:
                yield True
            finally:
                fcntl.lockf(self._file, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


SIBLINGS = Siblings()
