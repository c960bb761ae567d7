"""Workflows on real worker processes, on every broker: chains, groups, chords and their guarantees."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from celeriac import AsyncResult, GroupResult, chain, chord, group, signature, states
from celeriac.exceptions import ChordError
from helpers import wait_until


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_chain_group_chord_and_nesting(tasks: Any, start_worker: Any) -> None:
    start_worker("-c", "2")
    add, mul, tsum = tasks.add, tasks.mul, tasks.tsum
    res = chain(add.s(2, 2), add.s(4), add.s(8))()
    assert res.get(timeout=20) == 16
    assert res.parent.get(timeout=5) == 8 and res.parent.parent.get(timeout=5) == 4
    assert (add.s(2, 2) | add.s(4) | mul.s(8)).delay().get(timeout=20) == 64
    assert (add.si(1, 1) | add.si(5, 5)).delay().get(timeout=20) == 10  # immutable: ignores the parent

    g = group(add.s(i, i) for i in range(10))()
    assert g.get(timeout=20) == [i + i for i in range(10)]
    assert g.completed_count() == 10 and g.ready() and g.successful() and not g.failed()
    g.save()
    restored = GroupResult.restore(g.id, app=tasks.app)
    assert restored is not None and restored.get(timeout=5) == g.get()

    assert chord((add.s(i, i) for i in range(10)), tsum.s())().get(timeout=20) == 90
    assert chord([add.s(1, 1), add.s(2, 2)])(tsum.s()).get(timeout=20) == 6
    assert chord([], tsum.s())().get(timeout=20) == 0

    # Nesting, as Celery's canvas guide describes it.
    assert (add.s(1, 1) | group(add.s(1), add.s(2)) | tsum.s()).delay().get(timeout=20) == 7
    assert group(add.s(1, 1) | add.s(1), add.s(2, 2) | mul.s(10))().get(timeout=20) == [3, 40]
    assert chain(add.s(1, 1), chord([add.s(1), add.s(2)], tsum.s()), add.s(1000))().get(timeout=20) == 1007
    assert chord([add.s(1, 1), add.s(2, 2)], tsum.s() | add.s(1))().get(timeout=20) == 7
    assert group(group(add.s(1, 1), add.s(2, 2)), add.s(3, 3))().get(timeout=20) == [[2, 4], 6]

    assert add.chunks(zip(range(100), range(100), strict=True), 10)().get(timeout=20) == [
        [i + i for i in range(j, j + 10)] for j in range(0, 100, 10)]
    assert tasks.tsum.map([[1, 2], [3, 4]]).delay().get(timeout=20) == [3, 7]
    assert add.starmap([(1, 2), (3, 4)]).delay().get(timeout=20) == [3, 7]

    # A signature that went through JSON is still a workflow.
    import json
    as_json = json.loads(json.dumps(add.s(1, 1) | mul.s(3)))
    assert signature(as_json, app=tasks.app).delay().get(timeout=20) == 6


def test_failing_step_stops_chain_runs_errbacks_and_never_hangs(tasks: Any, start_worker: Any,
                                                                tmp_path: Path) -> None:
    start_worker("-c", "2")
    trace, errors, old_style = tmp_path / "trace", tmp_path / "errors", tmp_path / "old"
    workflow = (tasks.work.s(str(trace), 1) | tasks.fail.si("broken step") | tasks.work.si(str(trace), 3)
                | tasks.work.si(str(trace), 4))
    workflow = workflow.on_error(tasks.record_error.s(str(errors))).on_error(tasks.record_failed_id.s(str(old_style)))
    res = workflow.delay()
    with pytest.raises(ValueError, match="broken step"):
        res.get(timeout=20)  # the last step never runs, and still does not hang
    assert res.parent.state == states.FAILURE
    failed_id = res.parent.parent.id
    assert res.parent.parent.state == states.FAILURE
    wait_until(lambda: _lines(errors) and _lines(old_style), 20, message="both errbacks")
    assert _lines(errors) == [f"{failed_id} ValueError broken step"]
    assert _lines(old_style) == [failed_id]
    assert _lines(trace) == ["1"]  # steps 3 and 4 never ran


def test_failing_chord_header(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    start_worker("-c", "2")
    body_trace, errors = tmp_path / "body", tmp_path / "errors"
    failing = tasks.fail.s("header broke")
    body = tasks.record_body.s(str(body_trace)).on_error(tasks.record_error.s(str(errors)))
    res = chord([tasks.add.s(1, 1), failing, tasks.add.s(2, 2)], body)()
    with pytest.raises(ValueError, match="header broke"):  # as in Celery: the header task's own error
        res.get(timeout=20)
    header = res.parent
    failed_id = header.results[1].id
    with pytest.raises(ChordError) as info:  # what the body's result holds, read by id alone
        AsyncResult(res.id, app=res.app).get(timeout=20)
    assert failed_id in str(info.value) and "header broke" in str(info.value)
    assert res.state == states.FAILURE
    wait_until(lambda: _lines(errors), 20, message="errback")
    assert "ChordError" in _lines(errors)[0] and failed_id in _lines(errors)[0]
    header.join(timeout=20, propagate=False)
    assert not body_trace.exists()


def test_replace_and_workflows_built_inside_tasks(tasks: Any, start_worker: Any) -> None:
    start_worker("-c", "2")
    res = tasks.replaced.delay(4)
    assert res.get(timeout=20) == 50  # (4 + 1) * 10, under the replaced task's id
    assert (tasks.replaced.s(1) | tasks.add.s(5)).delay().get(timeout=20) == 25  # the chain goes on after

    parent = tasks.spawn_group.delay(3)
    assert parent.get(timeout=20) == 3
    [launched] = parent.children  # the group it started, as one GroupResult
    assert isinstance(launched, GroupResult) and len(launched.results) == 3
    assert launched.get(timeout=20) == [0, 2, 4]
    for child in launched.results:
        assert child.parent.id == parent.id
    nodes = list(parent.collect(timeout=20))
    assert [value for _, value in nodes] == [3, [0, 2, 4], 0, 2, 4]
    children = launched.results
    meta = tasks.app.backend.get(children[0].id)
    assert meta is not None and meta["root_id"] == parent.id and meta["parent_id"] == parent.id

    res = (tasks.add.s(1, 1) | tasks.add.s(1)).delay()
    assert res.get(timeout=20) == 3
    first = res.parent
    assert [c.id for c in first.children] == [res.id]
    assert tasks.app.backend.get(res.id)["root_id"] == first.id


def test_group_of_10000_is_published_in_one_batch(tasks: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = tasks.app.broker
    calls: list[int] = []
    real = broker.publish

    def counting(messages: Any) -> None:
        calls.append(len(messages))
        real(messages)

    monkeypatch.setattr(broker, "publish", counting)
    g = group(tasks.add.s(i, i) for i in range(10_000)).apply_async()
    assert calls == [10_000]
    assert len(g.results) == 10_000 and len({r.id for r in g.results}) == 10_000
    assert broker.queue_sizes(["celery"])["celery"]["ready"] >= 10_000


@pytest.mark.parametrize("layout", ["one worker -c 2", "two workers"])
def test_chord_of_5000_body_runs_exactly_once(tasks: Any, start_worker: Any, tmp_path: Path,
                                              broker_kind: str, layout: str) -> None:
    n = 5000 if broker_kind in ("sqlite", "redis") else 1000
    body_trace = tmp_path / "body"
    res = chord((tasks.add.s(i, 1) for i in range(n)), tasks.record_body.s(str(body_trace)))()
    start_worker("-c", "2", "-n", "a@host")
    if layout == "two workers":
        start_worker("-c", "2", "-n", "b@host")
    assert res.get(timeout=110) == sum(range(1, n + 1))
    assert _lines(body_trace)[0].split()[:3] == ["body", str(n), str(sum(range(1, n + 1)))]
    assert len(_lines(body_trace)) == 1


@pytest.mark.timeout(180)
def test_chord_completes_once_after_a_worker_is_killed_mid_headers(tasks: Any, start_worker: Any,
                                                                   tmp_path: Path) -> None:
    trace, body_trace = tmp_path / "trace", tmp_path / "body"
    n = 300
    res = chord((tasks.work.s(str(trace), i, 0.01) for i in range(n)), tasks.record_body.s(str(body_trace)))()
    first = start_worker("-c", "2", "-n", "first@host")
    wait_until(lambda: len(_lines(trace)) >= 60, 30, message="60 headers done")
    first.kill(signal.SIGKILL)
    first.proc.wait(10)
    assert len(_lines(trace)) < n, "the kill came too late to test anything"
    start_worker("-c", "2", "-n", "second@host")
    assert res.get(timeout=120) == sum(range(n))
    assert sorted(set(map(int, _lines(trace)))) == list(range(n))  # some ran twice (redelivered): fine
    assert len(_lines(body_trace)) == 1, _lines(body_trace)


def test_second_copy_of_a_chord_body_is_dropped(tasks: Any, start_worker: Any, tmp_path: Path) -> None:
    """The copy a re-run header may publish after a crash between the body's publish and its ack."""
    from celeriac.worker.workflow import CHORD_BODY_HEADER
    start_worker("-c", "1", "--prefetch-multiplier", "1")
    trace = tmp_path / "trace"
    first = tasks.work.apply_async((str(trace), 1), headers={CHORD_BODY_HEADER: "g1"})
    assert first.get(timeout=20) == 1
    tasks.work.apply_async((str(trace), 2), task_id=first.id, headers={CHORD_BODY_HEADER: "g1"})
    assert tasks.work.delay(str(trace), 3).get(timeout=20) == 3  # FIFO on one slot: the copy came first
    assert _lines(trace) == ["1", "3"]
    assert first.get(timeout=1) == 1
