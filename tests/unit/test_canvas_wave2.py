"""Canvas additions of wave 2, without a worker: lazy chord sizes in every result store,
chords extended while they run, group callbacks as Celery places them, settable signature
fields and stamping."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celeriac, chain, chord, group, signature, states
from celeriac.backends import ResultStore, create_result_store
from celeriac.backends.base import ChordPart
from celeriac.canvas import Signature, StampingVisitor


@pytest.fixture
def store(any_store_url: str) -> Iterator[ResultStore]:
    s = create_result_store(any_store_url)
    yield s
    s.close()


def part(store: ResultStore, group_id: str, index: int, size: int, status: str = states.SUCCESS,
         task_id: str | None = None) -> ChordPart:
    task_id = task_id or f"{group_id}-t{index}"
    meta = {"task_id": task_id, "status": status, "result": index, "traceback": None, "children": [],
            "date_done": None, "name": "t.header"}
    body = {"task": "t.body", "args": [], "kwargs": {}, "options": {}, "subtask_type": None, "immutable": False,
            "chord_size": size}
    return ChordPart(group_id, index, size, task_id, status, store.encode(meta).data, body, root_id="root")


def gid() -> str:
    return f"g-{uuid.uuid4().hex}"


# --- the store: lazily sent headers (only the last part knows the size) -------------------

@pytest.mark.parametrize("last_at", [0, 2, 4])
def test_lazy_chord_fires_once_whenever_the_part_that_knows_the_size_arrives(store: ResultStore,
                                                                               last_at: int) -> None:
    g = gid()
    order = [0, 1, 2, 3]
    order.insert(last_at, 4)  # index 4 is the last member: its message carried size 5
    fired = []
    for i in order:
        fired += store.chord_parts_done([part(store, g, i, 5 if i == 4 else 0)])
    assert len(fired) == 1
    assert fired[0].part.task_id == f"{g}-t{order[-1]}"
    assert fired[0].part.size == 5
    assert [m["result"] for m in fired[0].metas] == [0, 1, 2, 3, 4]


def test_lazy_chord_never_fires_before_its_size_is_known(store: ResultStore) -> None:
    g = gid()
    for i in range(50):  # many parts, none of which knows the size: nothing fires
        assert store.chord_parts_done([part(store, g, i, 0)]) == []


def test_lazy_chord_failure_still_fires_at_once(store: ResultStore) -> None:
    g = gid()
    assert store.chord_parts_done([part(store, g, 0, 0)]) == []
    [fired] = store.chord_parts_done([part(store, g, 1, 0, status=states.FAILURE)])
    assert fired.part.failed


def test_chord_extend_makes_the_chord_wait_for_the_added_members(store: ResultStore) -> None:
    g = gid()
    assert store.chord_parts_done([part(store, g, 0, 2)]) == []
    assert store.chord_extend(g) == 1  # a running header task adds a member...
    assert store.chord_extend(g, 1) == 2  # ...and another
    assert store.chord_parts_done([part(store, g, 1, 2)]) == []  # the header is complete: not enough
    assert store.chord_parts_done([part(store, g, 1 << 30 | 1, 0)]) == []
    [fired] = store.chord_parts_done([part(store, g, 1 << 30 | 2, 0)])
    assert fired.part.size == 4
    assert [m["result"] for m in fired.metas] == [0, 1, 1 << 30 | 1, 1 << 30 | 2]
