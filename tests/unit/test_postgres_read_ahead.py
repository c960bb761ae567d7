"""A client that reads the results of the tasks it sent, in order, on PostgreSQL: one SELECT
brings the next final results too (transports/postgres/readahead.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import AsyncResult, Celeriac

from helpers import fresh_postgres_url

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def app(request: pytest.FixtureRequest) -> Iterator[Celeriac]:
    url = fresh_postgres_url(request)
    made = Celeriac("ahead", broker=url, backend=url, set_as_current=False)

    @made.task(name="ahead.add")
    def add(x: int, y: int) -> int:
        return x + y

    yield made
    made.close()


def _finish(app: Celeriac, task_id: str, value: Any) -> None:
    """What a worker writes for a task that succeeded."""
    app.backend.store([app.backend.encode({"task_id": task_id, "status": "SUCCESS", "result": value,
                                           "traceback": None, "children": []})])


def _count_reads(app: Celeriac, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    db = app.backend.db  # type: ignore[attr-defined]
    reads = [0]
    real = db.read

    def counted(fn: Any) -> Any:
        reads[0] += 1
        return real(fn)

    monkeypatch.setattr(db, "read", counted)
    return reads


def test_results_read_in_order_take_one_select_for_many(app: Celeriac, monkeypatch: pytest.MonkeyPatch) -> None:
    sent = [app.tasks["ahead.add"].delay(i, i) for i in range(10)]
    for i, result in enumerate(sent[:8]):
        _finish(app, result.id, 2 * i)
    reads = _count_reads(app, monkeypatch)
    assert [r.get(timeout=5) for r in sent[:8]] == [0, 2, 4, 6, 8, 10, 12, 14]
    assert reads[0] == 1  # the first brought the seven after it
    assert not sent[8].ready() and not sent[8].ready()  # the client is ahead: polled alone, no stale answer
    assert reads[0] == 3
    _finish(app, sent[8].id, 16)
    _finish(app, sent[9].id, 18)
    assert sent[8].ready() and sent[8].get(timeout=5) == 16


def test_a_forgotten_result_is_not_served_from_what_was_read_ahead(app: Celeriac) -> None:
    sent = [app.tasks["ahead.add"].delay(i, i) for i in range(3)]
    for i, result in enumerate(sent):
        _finish(app, result.id, 2 * i)
    assert sent[0].get(timeout=5) == 0  # reads ahead 1 and 2
    app.backend.forget([sent[1].id])
    assert AsyncResult(sent[1].id, app=app).state == "PENDING"
    assert AsyncResult(sent[2].id, app=app).get(timeout=5) == 4


def test_only_final_results_are_kept(app: Celeriac) -> None:
    sent = [app.tasks["ahead.add"].delay(i, i) for i in range(2)]
    app.backend.store([app.backend.encode({"task_id": sent[1].id, "status": "STARTED", "result": None,
                                           "traceback": None, "children": []})])
    _finish(app, sent[0].id, 0)
    assert sent[0].get(timeout=5) == 0  # read ahead: sent[1] is STARTED, not kept
    _finish(app, sent[1].id, 2)
    assert sent[1].state == "SUCCESS" and sent[1].get(timeout=5) == 2
