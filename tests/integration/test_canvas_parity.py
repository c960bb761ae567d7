"""Canvas behaviour Celery users rely on, on real workers and every broker: group callbacks,
chord headers read lazily from a generator, Task.add_to_chord, and stamping."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import chain, chord, group, states
from celeriac.canvas import StampingVisitor
from celeriac.canvas.lazy import LAZY_BATCH
from celeriac.exceptions import ChordError
from helpers import wait_until


@pytest.fixture
def ct(app_env: dict[str, str]) -> Iterator[Any]:
    """The canvas test tasks, their app pointed at this test's broker."""
    import canvas_tasks
    canvas_tasks.app._reset_connections()
    yield canvas_tasks
    canvas_tasks.app._reset_connections()


@pytest.fixture
def worker(ct: Any, start_worker: Any) -> Any:
    return start_worker("-c", "2", app="canvas_tasks")


# --- group.link / group.link_error: where Celery puts them --------------------------------

def test_group_link_runs_once_after_the_first_member_without_its_result(ct: Any, worker: Any,
                                                                         tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    g = group(ct.add.s(1, 1), ct.add.s(2, 2), ct.add.s(3, 3))
    linked = g.link(ct.record.s(str(calls), "linked"))
    assert linked.immutable  # a copy, made immutable: the first task cannot pass its siblings' results
    res = g.apply_async()
    assert res.get(timeout=20) == [2, 4, 6]
    wait_until(lambda: ct.lines(calls), 20, message="the group's callback")
    assert ct.lines(calls) == ["linked"]  # its own arguments only, not the member's result
    first, second, third = (r for r in res.results)
    assert len(first.children) == 1 and first.children[0].get(timeout=20) == str(calls)
    assert second.children == [] and third.children == []  # linked to the first task only


def test_group_link_does_not_run_when_the_first_member_fails(ct: Any, worker: Any, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    g = group(ct.fail.si("first"), ct.add.s(2, 2))
    g.link(ct.record.s(str(calls), "linked"))
    res = g.apply_async()
    assert res.join(timeout=20, propagate=False)[1] == 4
    assert res.results[0].state == states.FAILURE and res.results[0].children == []
    assert ct.lines(calls) == []


def test_group_link_error_is_called_once_per_failing_member(ct: Any, worker: Any, tmp_path: Path) -> None:
    errors = tmp_path / "errors"
    g = group(ct.fail.si("a"), ct.add.si(1, 1), ct.fail.si("b"))
    copies = g.link_error(ct.record_error.s(str(errors)))
    assert len(copies) == 3
    res = g.apply_async()
    values = res.join(timeout=20, propagate=False)
    assert values[1] == 2
    wait_until(lambda: len(ct.lines(errors)) == 2, 20, message="two errbacks")
    assert sorted(ct.lines(errors)) == sorted([f"{res.results[0].id} ValueError('a')",
                                               f"{res.results[2].id} ValueError('b')"])


def test_group_apply_async_with_link_is_refused_as_in_celery(ct: Any) -> None:
    with pytest.raises(TypeError, match="use a chord"):
        group(ct.add.s(1, 1)).apply_async(link=ct.add.s(1))
    with pytest.raises(TypeError, match="individual tasks"):
        group(ct.add.s(1, 1)).apply_async(link_error=ct.add.s(1))


# --- chord headers from a generator --------------------------------------------------------

def test_lazy_chord_header_publishes_before_the_generator_ends(ct: Any, worker: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pulled = 0
    at_first_publish: list[int] = []
    real_publish = ct.app.publish

    def publish(messages: Any, *args: Any, **kwargs: Any) -> None:
        if not at_first_publish:
            at_first_publish.append(pulled)
        real_publish(messages, *args, **kwargs)

    monkeypatch.setattr(ct.app, "publish", publish)

    def members(n: int) -> Iterator[Any]:
        nonlocal pulled
        for i in range(n):
            pulled += 1
            yield ct.add.s(i, i)

    n = 2000
    res = chord(members(n), ct.tsum.s()).apply_async()
    assert pulled == n
    assert at_first_publish and at_first_publish[0] <= LAZY_BATCH + 1 < n  # sent as it was read
    assert res.get(timeout=120) == sum(i + i for i in range(n))  # the body ran, with every value
    assert len(res.parent.results) == n
    assert res.parent.get(timeout=20)[:3] == [0, 2, 4]


def test_lazy_chord_header_sizes_one_and_zero_and_a_failing_generator(ct: Any, worker: Any) -> None:
    assert chord((ct.add.s(i, i) for i in range(1)), ct.collect.s()).delay().get(timeout=20) == [0]
    assert chord((ct.add.s(i, i) for i in range(0)), ct.collect.s()).delay().get(timeout=20) == []
    # exactly one batch, and one more than a batch: the size travels in the last message
    for n in (LAZY_BATCH, LAZY_BATCH + 1):
        assert chord((ct.add.s(i, 0) for i in range(n)), ct.collect.s()).delay().get(timeout=60) == list(range(n))

    def broken() -> Iterator[Any]:
        yield ct.add.s(1, 1)
        raise RuntimeError("no more members")

    lazy = chord(broken(), ct.collect.s())
    body_id = str(uuid.uuid4())
    with pytest.raises(RuntimeError, match="no more members"):
        lazy.apply_async(task_id=body_id)
    with pytest.raises(ChordError, match="no more members"):  # the body says why it never runs
        ct.app.AsyncResult(body_id).get(timeout=20)


def test_lazy_chord_sent_from_a_task_is_its_child(ct: Any, worker: Any) -> None:
    parent = ct.sends_lazy_chord.delay(5)
    body_id = parent.get(timeout=20)
    assert ct.app.AsyncResult(body_id).get(timeout=20) == 20
    header, body = parent.children  # as for a chord sent any other way: the header group, then the body
    assert len(header.results) == 5 and header.get(timeout=20) == [0, 2, 4, 6, 8]
    assert body.id == body_id


def test_lazy_chord_header_failure_fails_the_body(ct: Any, worker: Any) -> None:
    members = (ct.fail.si("member 3") if i == 3 else ct.add.s(i, i) for i in range(10))
    res = chord(members, ct.tsum.s()).delay()
    with pytest.raises(ValueError, match="member 3"):  # as in Celery: the failed member's own error
        res.get(timeout=20)
    with pytest.raises(ChordError, match="member 3"):  # what the body itself stored
        res.get(timeout=20, follow_parents=False)


# --- Task.add_to_chord ----------------------------------------------------------------------

def test_add_to_chord_makes_the_body_wait_for_the_new_members(ct: Any, worker: Any) -> None:
    res = chord([ct.grow_chord.s(1), ct.grow_chord.s(2)], ct.collect.s()).delay()
    values = res.get(timeout=30)
    assert values[:2] == [1, 2]  # the header's results, in header order
    assert sorted(values[2:]) == [101, 102]  # then the added members' results
    res = chord([ct.grow_chord_lazily.s(5)], ct.collect.s()).delay()
    assert res.get(timeout=30) == [5, 1005]


def test_add_to_chord_outside_a_chord_is_a_clear_error(ct: Any, worker: Any) -> None:
    message = ct.not_in_chord.delay().get(timeout=20)
    assert "is not a member of any chord" in message and "canvas_tasks.not_in_chord" in message


# --- stamping -------------------------------------------------------------------------------

class MonitoringId(StampingVisitor):
    def __init__(self) -> None:
        self.count = 0

    def on_signature(self, sig: Any, **headers: Any) -> dict[str, Any]:
        self.count += 1
        return {"monitoring_id": f"m{self.count}"}


def test_stamps_reach_the_running_task_and_its_stored_result(ct: Any, worker: Any) -> None:
    sig = ct.stamps_seen.s()
    sig.stamp(stamp="mine")
    res = sig.delay()
    seen = res.get(timeout=20)
    assert seen["stamped_headers"] == ["stamp"] and seen["stamps"] == {"stamp": "mine"}
    assert seen["header_stamps"] == {"stamp": "mine"}  # in the message headers, Celery's layout
    meta = ct.app.backend.get_many([res.id])[res.id]  # result_extended: stored as Celery does
    assert meta["stamp"] == "mine" and meta["stamped_headers"] == ["stamp"]

    unstamped = ct.stamps_seen.delay().get(timeout=20)
    assert unstamped["stamps"] is None and unstamped["stamped_headers"] is None


def test_stamps_propagate_through_chains_groups_and_chords(ct: Any, worker: Any) -> None:
    flow = chain(ct.stamps_seen.s(), ct.stamps_seen.s())
    flow.stamp(visitor=MonitoringId(), flow="f1")
    res = flow.delay()
    last, first = res.get(timeout=20), res.parent.get(timeout=20)
    assert first["stamps"] == {"flow": "f1", "monitoring_id": "m1"}
    assert last["stamps"] == {"flow": "f1", "monitoring_id": "m2"}  # each task its own visitor stamp

    c = chord([ct.stamps_seen.s(), ct.stamps_seen.s()], ct.stamps_seen.s())
    c.stamp(batch="b7")
    res = c.delay()
    assert res.get(timeout=20)["stamps"] == {"batch": "b7"}  # the body, started by the worker
    assert [r["stamps"] for r in res.parent.get(timeout=20)] == [{"batch": "b7"}] * 2

    g = group(ct.stamps_seen.s(), ct.stamps_seen.s())
    g.stamp(tag="one")
    g.stamp(tag="two", append_stamps=True)
    assert [r["stamps"] for r in g.delay().get(timeout=20)] == [{"tag": ["one", "two"]}] * 2


def test_stamped_callbacks_are_stamped_too(ct: Any, worker: Any) -> None:
    sig = ct.add.s(1, 1)
    callback = ct.stamps_seen.s()
    callback_result = callback.freeze()
    sig.link(callback)

    class CallbackVisitor(StampingVisitor):
        def on_signature(self, sig: Any, **headers: Any) -> dict[str, Any]:
            return {"header": "value"}

        def on_callback(self, callback: Any, **headers: Any) -> dict[str, Any]:
            return {"on_callback": True}

    sig.stamp(visitor=CallbackVisitor())
    assert sig.delay().get(timeout=20) == 2
    seen = ct.app.AsyncResult(callback_result.id).get(timeout=20)
    assert seen["stamps"] == {"header": "value", "on_callback": True}


def test_revoke_by_stamped_headers(ct: Any, start_worker: Any) -> None:
    g = group(ct.add.si(1, 1), ct.add.si(2, 2))
    g.stamp(batch="b1")
    other = ct.add.si(3, 3)
    other.stamp(batch="b2")
    listed = ct.add.si(4, 4)
    listed.stamp(batch="b0")
    listed.stamp(batch="b1", append_stamps=True)  # a stamp holding a list: any of its values counts
    ct.app.control.revoke_by_stamped_headers({"batch": "b1"})
    revoked, kept, revoked_too, plain = g.delay(), other.delay(), listed.delay(), ct.add.delay(5, 5)
    start_worker("-c", "2", app="canvas_tasks")  # revocations are durable: a later worker honours them
    assert kept.get(timeout=20) == 6 and plain.get(timeout=20) == 10
    wait_until(lambda: revoked.ready() and revoked_too.ready(), 20, message="revoked tasks")
    assert [r.state for r in revoked.results] == [states.REVOKED, states.REVOKED]
    assert revoked_too.state == states.REVOKED
    with pytest.raises(NotImplementedError, match="terminate=True"):
        ct.app.control.revoke_by_stamped_headers({"batch": "b2"}, terminate=True)


def test_group_unrolling_chord_callbacks_invert_and_on_replace(ct: Any, worker: Any, tmp_path: Path) -> None:
    assert chain(ct.add.s(2, 2), group(ct.add.s(1)), ct.add.s(1)).delay().get(timeout=20) == 6  # unrolled
    assert chain(group(ct.add.s(1, 1)), ct.add.s(2)).delay().get(timeout=20) == 4
    assert ~ct.add.s(2, 3) == 5

    calls, errors = tmp_path / "calls", tmp_path / "errors"
    c = chord([ct.add.s(1, 1), ct.add.s(2, 2)], ct.tsum.s())
    c.link(ct.record_result.s(str(calls)))  # to the body: runs once, with the body's result
    assert c.delay().get(timeout=20) == 6
    wait_until(lambda: ct.lines(calls), 20, message="the chord's callback")
    assert ct.lines(calls) == ["6"]
    failing = chord([ct.fail.si("header"), ct.add.s(2, 2)], ct.tsum.s())
    failing.link_error(ct.record_error.s(str(errors)))
    res = failing.delay()
    with pytest.raises(ValueError, match="header"):  # the failed header task's own error, as in Celery
        res.get(timeout=20)
    wait_until(lambda: ct.lines(errors), 20, message="the chord's errback")
    assert len(ct.lines(errors)) == 1 and ct.lines(errors)[0].startswith(f"{res.id} ChordError(")

    replaced = ct.replaced_by_stamps_seen.s()
    callback = ct.stamps_seen.s()
    callback_result = callback.freeze()
    replaced.link(callback)  # inherited by the replacement, so on_replace stamps it too
    seen = replaced.delay().get(timeout=20)
    assert seen["stamps"] == {"replaced_by": "canvas_tasks.replaced_by_stamps_seen"}
    assert ct.app.AsyncResult(callback_result.id).get(timeout=20)["stamps"] == seen["stamps"]


def test_group_skew_spreads_countdowns(ct: Any) -> None:
    g = group(ct.add.s(i, i) for i in range(4)).skew(start=1, stop=2.5, step=1)
    assert [t.options["countdown"] for t in g.tasks] == [1, 2, 2, 2]
