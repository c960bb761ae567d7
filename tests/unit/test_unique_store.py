"""Unique keys on every result store: claimed atomically, released only by their holder."""

from __future__ import annotations

import threading
import time
import uuid

from celeriac.backends import ResultStore
from helpers import wait_until


def test_a_live_hold_names_its_holder_and_release_frees_it(any_store: ResultStore) -> None:
    key = f"tasks.add:{uuid.uuid4().hex}"
    assert any_store.claim_unique(key, "first", 60) == "first"
    assert any_store.claim_unique(key, "second", 60) == "first"
    any_store.release_unique([(key, "second")])  # not the holder: nothing happens
    assert any_store.claim_unique(key, "third", 60) == "first"
    any_store.release_unique([(key, "first")])
    assert any_store.claim_unique(key, "third", 60) == "third"


def test_an_expired_hold_is_claimed_again_and_the_old_holder_cannot_release_it(any_store: ResultStore) -> None:
    key = f"tasks.add:{uuid.uuid4().hex}"
    assert any_store.claim_unique(key, "old", 0.2) == "old"
    wait_until(lambda: any_store.claim_unique(key, "new", 60) == "new", 5, message="the hold to expire")
    any_store.release_unique([(key, "old")])  # the old task finishing late frees nothing
    assert any_store.claim_unique(key, "other", 60) == "new"


def test_many_threads_claiming_at_once_make_one_holder(any_store: ResultStore) -> None:
    key = f"tasks.add:{uuid.uuid4().hex}"
    start = threading.Barrier(12)
    answers: list[str] = []

    def claim(n: int) -> None:
        start.wait()
        answers.append(any_store.claim_unique(key, f"caller-{n}", 60))

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(answers) == 12 and len(set(answers)) == 1, answers


def test_keys_are_independent(any_store: ResultStore) -> None:
    a, b = f"t:{uuid.uuid4().hex}", f"t:{uuid.uuid4().hex}"
    assert any_store.claim_unique(a, "x", 60) == "x"
    assert any_store.claim_unique(b, "y", 60) == "y"
    any_store.release_unique([])
    started = time.monotonic()
    any_store.release_unique([(a, "x"), (b, "y")])
    assert time.monotonic() - started < 5
    assert any_store.claim_unique(a, "z", 60) == "z" and any_store.claim_unique(b, "z", 60) == "z"
