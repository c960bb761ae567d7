"""Searching a big history from the dashboard, on every result store: a page reads the history
in steps of SEARCH_WINDOW records and answers when it is full or its time (SEARCH_BUDGET) is
spent, with where to go on; following those pages finds every match, once, newest first."""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from celeriac import Celeriac, history  # noqa: E402
from celeriac.dashboard import data as dashboard_data  # noqa: E402
from celeriac.dashboard.web import create_app  # noqa: E402
from celeriac.history import TaskRecord  # noqa: E402

pytestmark = pytest.mark.timeout(120)

TOTAL = 300
NEEDLE_AT = 40  # the one task whose arguments hold "needle": old, far below the first steps


@pytest.fixture
def filled(any_store_url: str) -> Iterator[tuple[TestClient, list[str]]]:
    app = Celeriac("dashsearch", broker="memory://dashsearch", backend=any_store_url, set_as_current=False)
    now = time.time()
    batch = []
    for i in range(TOTAL):  # task-299 is the newest
        task_id = f"task-{i:03d}"
        stored = app.backend.encode({"task_id": task_id, "status": "SUCCESS", "result": i, "children": []})
        words = "needle" if i == NEEDLE_AT else f"hay-{i % 7}"
        stored.history = TaskRecord(task_id, "shop.pack", "SUCCESS", worker="w@h", updated=now - TOTAL + i,
                                    args=f'[["{words}"],{{}}]', meta=stored.data, finished=now - TOTAL + i)
        batch.append(stored)
    app.backend.store(batch)
    newest_first = [f"task-{i:03d}" for i in reversed(range(TOTAL))]
    yield TestClient(create_app(app, events=False), base_url="http://127.0.0.1:5555"), newest_first
    app.close()


def _all_pages(client: TestClient, params: dict[str, Any]) -> tuple[list[str], int]:
    """Follow next_until to the end: (the ids found, in order; how many requests it took)."""
    found: list[str] = []
    until, requests = None, 0
    while True:
        answer = client.get("/api/tasks", params={**params, **({"until": until} if until is not None else {})})
        assert answer.status_code == 200
        body = answer.json()
        requests += 1
        found += [t["task_id"] for t in body["tasks"]]
        assert body["more"] == (body["next_until"] is not None)
        if body["next_until"] is None:
            return found, requests
        assert until is None or body["next_until"] < until
        until = body["next_until"]
        assert requests < 100, "the pages go back in time until the oldest record"


def test_a_search_whose_time_runs_out_answers_with_where_to_go_on(filled: tuple[TestClient, list[str]],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    client, newest_first = filled
    monkeypatch.setattr(history, "SEARCH_WINDOW", 25)
    monkeypatch.setattr(dashboard_data, "SEARCH_BUDGET", 0.0)  # one step per page
    first = client.get("/api/tasks", params={"search": "needle"}).json()
    assert first["tasks"] == [] and first["more"] is True and first["next_until"] is not None
    found, requests = _all_pages(client, {"search": "needle"})
    assert found == [newest_first[TOTAL - 1 - NEEDLE_AT]]  # found once, in the step that holds it
    assert requests >= (TOTAL - NEEDLE_AT) // 25  # each page read one step of at most 25 records
    page = client.get("/tasks", params={"search": "needle"}).text
    assert "no match yet" in page and "Search older tasks" in page and "until=" in page
    assert "older →" not in page  # one way on, not two


def test_search_pages_find_every_match_once_newest_first(filled: tuple[TestClient, list[str]],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    client, newest_first = filled
    monkeypatch.setattr(history, "SEARCH_WINDOW", 30)
    expected = [t for t in newest_first if int(t[-3:]) % 7 == 3 and int(t[-3:]) != NEEDLE_AT]
    found, requests = _all_pages(client, {"search": "hay-3", "limit": 8})  # full pages, several steps each
    assert found == expected and requests >= len(expected) // 8
    # With time to spare a page goes through as many steps as it needs.
    whole = client.get("/api/tasks", params={"search": "hay-3", "limit": 1000}).json()
    assert [t["task_id"] for t in whole["tasks"]] == expected and whole["next_until"] is None
    # By task id, and with a filter the search steps through that filter's index.
    assert [t["task_id"] for t in client.get("/api/tasks", params={"search": "task-007"}).json()["tasks"]] == \
        ["task-007"]
    assert client.get("/api/tasks", params={"search": "needle", "state": "FAILURE"}).json()["tasks"] == []
    html = client.get("/tasks", params={"search": "hay-3", "limit": 8}).text
    assert html.count("data-task=") == 8 and "older →" in html and "until=" in html
    assert "Search older tasks" not in html  # a full page: the pager goes on
