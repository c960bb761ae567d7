"""Canvas additions of wave 2, without a worker: lazy chord sizes in every result store,
chords extended while they run, group callbacks as Celery places them, settable signature
fields and stamping."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celeriac, chain, chord, group, states
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


# --- API, no worker ---------------------------------------------------------------------------

@pytest.fixture
def app() -> Celeriac:
    app = Celeriac("wave2", broker="memory://wave2", backend="memory://wave2")

    @app.task(name="wave2.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="wave2.tsum")
    def tsum(numbers: list[int]) -> int:
        return sum(numbers)

    return app


def test_signature_fields_are_settable_as_in_celery(app: Celeriac) -> None:
    sig = app.tasks["wave2.add"].s(1)
    sig.args = (2, 3)
    sig.kwargs = {"y": 4}
    sig.options = {"queue": "q1"}
    sig.immutable = True
    assert sig["args"] == (2, 3) and sig["kwargs"] == {"y": 4} and sig["options"] == {"queue": "q1"}
    assert sig.immutable and sig["immutable"] is True
    sig.kwargs["z"] = 5  # the dict itself, as in Celery: changing it changes the signature
    assert sig["kwargs"] == {"y": 4, "z": 5}
    sig.subtask_type = "custom"
    assert sig["subtask_type"] == "custom"
    copy = json.loads(json.dumps(sig))
    assert copy["args"] == [2, 3] and copy["immutable"] is True


def test_group_link_and_link_error_place_callbacks_as_celery(app: Celeriac) -> None:
    add = app.tasks["wave2.add"]
    g = group(add.s(1, 1), add.s(2, 2) | add.s(3), add.s(4, 4))
    callback = add.s(10)
    linked = g.link(callback)
    assert linked is not callback and linked.immutable and not callback.immutable
    assert g.tasks[0].options["link"] == [linked]
    assert "link" not in g.tasks[2].options and "link" not in g.options
    errbacks = g.link_error(add.s(0))
    assert len(errbacks) == 3 and len({id(e) for e in errbacks}) == 3  # one copy per member
    assert [t.options["link_error"] for t in g.tasks] == [[e] for e in errbacks]
    with pytest.raises(ValueError, match="empty"):
        group([]).link(callback)


def test_a_generator_chord_header_is_not_read_until_needed(app: Celeriac) -> None:
    add = app.tasks["wave2.add"]
    pulled = []

    def members() -> Iterator[Signature]:
        for i in range(5):
            pulled.append(i)
            yield add.s(i, i)

    as_json = chord(members(), app.tasks["wave2.tsum"].s())
    assert len(json.loads(json.dumps(as_json))["kwargs"]["header"]["kwargs"]["tasks"]) == 5  # read for JSON
    pulled.clear()
    c = chord(members(), app.tasks["wave2.tsum"].s())
    assert pulled == [] and c.is_lazy
    assert len(c.header.tasks) == 5 and pulled == [0, 1, 2, 3, 4]  # read to the end, once
    assert not c.is_lazy and len(json.loads(json.dumps(c))["kwargs"]["header"]["kwargs"]["tasks"]) == 5


def test_stamping_merges_as_documented(app: Celeriac) -> None:
    add = app.tasks["wave2.add"]
    sig = add.s(1, 1)
    sig.stamp(a="1")
    sig.stamp(a="2")  # replaced
    assert sig.options["a"] == "2" and sig.options["stamped_headers"] == ["a"]
    sig.stamp(a="3", append_stamps=True)  # kept, as a list
    assert sig.options["a"] == ["2", "3"]

    class Partial(StampingVisitor):
        def on_signature(self, sig: Signature, **headers: object) -> dict[str, object]:
            return {"only": 1, "not_a_stamp": 2, "stamped_headers": ["only"]}

    other = add.s(1, 1)
    other.stamp(visitor=Partial())
    assert other.options["stamped_headers"] == ["only"] and other.options["not_a_stamp"] == 2

    flow = chain(add.s(1, 1), group(add.s(1), add.s(2)), add.s(3))
    flow.stamp(visitor=Partial(), run="r")
    steps = flow.tasks
    for leaf in [steps[0], *steps[1].tasks, steps[2]]:
        assert leaf.options["run"] == "r" and leaf.options["only"] == 1
        assert set(leaf.options["stamped_headers"]) == {"run", "only"}
    body = add.s(0)
    c = chord([add.s(1, 1)], body)
    c.body.link(add.s(5))
    c.body.link_error(add.s(6))
    c.stamp(tag="t")
    assert c.body.options["tag"] == "t" and c.header.tasks[0].options["tag"] == "t"
    assert c.body.options["link"][0].options["tag"] == "t"
    assert c.body.options["link_error"][0].options["tag"] == "t"


def test_stamps_reach_an_eager_request(app: Celeriac) -> None:
    app.conf.task_always_eager = True

    @app.task(bind=True, name="wave2.seen")
    def seen(self: Any) -> Any:
        return self.request.stamps

    sig = seen.s()
    sig.stamp(where="eager")
    assert sig.delay().get() == {"where": "eager"}


def test_a_chain_ending_in_a_group_links_its_callback_as_group_link(app: Celeriac) -> None:
    add = app.tasks["wave2.add"]
    flow = chain(add.s(1, 1), group(add.s(1), add.s(2)))
    placed = flow._with_tail({"link": add.s(10)})
    last = placed.tasks[-1]
    assert isinstance(last, group)
    assert [len(t.options.get("link") or []) for t in last.tasks] == [1, 0]
    assert last.tasks[0].options["link"][0].immutable


def test_revocations_by_stamp_are_read_apart_from_revoked_ids(app: Celeriac) -> None:
    from celeriac.worker.revocations import Revocations

    app.control.revoke_by_stamped_headers({"batch": ["b1", "b2"], "n": 7})
    app.control.revoke("some-task-id")
    seen = Revocations(app)
    seen.refresh(force=True)
    assert seen.known() == ["some-task-id"]  # stamps are not listed as task ids
    assert seen.revoked_stamp({"batch": "b2"}) == 'batch="b2"'
    assert seen.revoked_stamp({"batch": ["x", "b1"]}) == 'batch="b1"'  # any value of a list stamp
    assert seen.revoked_stamp({"n": 7}) == "n=7"
    assert seen.revoked_stamp({"n": "7"}) is None and seen.revoked_stamp({"batch": "b3"}) is None
    assert seen.revoked_stamp(None) is None
    with pytest.raises(NotImplementedError, match="terminate=True"):
        app.control.revoke_by_stamped_headers({"batch": "b1"}, terminate=True)


def test_group_set_immutable_reaches_every_member(app: Celeriac) -> None:
    add = app.tasks["wave2.add"]
    g = group(add.s(1, 1), add.s(2, 2))
    g.set_immutable(True)
    assert [t.immutable for t in g.tasks] == [True, True]
    app.conf.task_always_eager = True
    assert chain(add.s(5, 5), g).apply_async().get() == [2, 4]  # the members ignore add(5, 5)'s result
