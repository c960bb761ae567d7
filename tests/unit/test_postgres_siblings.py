"""What forked pool processes share about their claims (transports/postgres/siblings.py): a
draining claim seen by every sibling, and a claim turn that a killed holder gives back."""

from __future__ import annotations

import os
import signal
import time

import pytest

from celeriac.transports.postgres import siblings
from celeriac.transports.postgres.siblings import Siblings

pytestmark = pytest.mark.timeout(60)


def test_a_draining_claim_is_seen_by_a_forked_sibling_and_only_for_its_queues() -> None:
    shared = Siblings()
    key, other = Siblings.key("db", ["celery"]), Siblings.key("db", ["images"])
    woken_at = time.monotonic()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the sibling: claims, finds the queue drained, says so
        with shared.claiming() as turn:
            shared.mark_drained(key, time.monotonic())
        os.write(write, b"1" if turn else b"0")
        os._exit(0)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    assert shared.drained_since(key, woken_at)  # notified before that claim started: nothing to find
    assert not shared.drained_since(key, time.monotonic())  # notified after it: look
    assert not shared.drained_since(other, woken_at)  # another queue set learnt nothing
    shared.mark_drained(key, woken_at - 10)  # an older claim does not move it back
    assert shared.drained_since(key, woken_at)


def test_the_claim_turn_excludes_siblings_and_a_killed_holder_gives_it_back(monkeypatch: pytest.MonkeyPatch) -> None:
    shared = Siblings()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # holds the turn until killed
        with shared.claiming() as turn:
            os.write(write, b"1" if turn else b"0")
            time.sleep(60)
        os._exit(0)
    try:
        assert os.read(read, 1) == b"1"
        monkeypatch.setattr(siblings, "LOCK_WAIT", 0.2)
        started = time.monotonic()
        with shared.claiming() as turn:
            assert not turn  # the sibling holds it: after LOCK_WAIT this one goes on without
        assert 0.15 <= time.monotonic() - started < 5
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    with shared.claiming() as turn:  # the kernel released the killed holder's lock
        assert turn
