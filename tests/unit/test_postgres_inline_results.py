"""A small final result rides inside its PostgreSQL NOTIFY, so the waiting client has it
without a SELECT (transports/postgres/results.py `_notice`); a big one, or a payload an older
reader sends, still works through the table."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celeriac, states
from celeriac.transports.postgres.database import Wakeups

from helpers import fresh_postgres_url

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def app(request: pytest.FixtureRequest) -> Iterator[Celeriac]:
    url = fresh_postgres_url(request)
    made = Celeriac("inline", broker=url, backend=url, set_as_current=False)
    yield made
    made.close()


def _count_reads(app: Celeriac, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    real = app.backend.get

    def counting(task_id: str) -> Any:
        reads.append(task_id)
        return real(task_id)

    monkeypatch.setattr(app.backend, "get", counting)
    return reads


def _finish_later(app: Celeriac, task_id: str, value: Any) -> threading.Timer:
    timer = threading.Timer(0.3, lambda: app.store_state(task_id, states.SUCCESS, value))
    timer.start()
    return timer


@pytest.mark.parametrize("value", [{"total": 42}, "<script>é ü 😀</script>", None])
def test_a_small_result_arrives_in_its_notification(app: Celeriac, monkeypatch: pytest.MonkeyPatch,
                                                    value: Any) -> None:
    reads = _count_reads(app, monkeypatch)
    timer = _finish_later(app, "t-small", value)
    meta = app.backend.wait("t-small", 20)
    timer.join()
    assert meta is not None and meta["status"] == states.SUCCESS and meta["result"] == value
    assert reads == ["t-small"]  # the first look only: the result itself came with the wake-up


def test_a_big_result_is_read_from_the_table(app: Celeriac, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = _count_reads(app, monkeypatch)
    big = "x" * 10_000
    timer = _finish_later(app, "t-big", big)
    meta = app.backend.wait("t-big", 20)
    timer.join()
    assert meta is not None and meta["result"] == big
    assert reads == ["t-big", "t-big"]  # woken by the id, then read


def test_payload_tokens_that_are_not_results_wake_by_id_only() -> None:
    import threading as _threading

    from celeriac.transports.postgres.database import Waiter

    fake = Wakeups.__new__(Wakeups)
    fake.lock = _threading.Lock()
    waiters = {name: Waiter([f"r:{name}"]) for name in ("a", "b", "c")}
    fake.waiters = {f"r:{name}": {w} for name, w in waiters.items()}
    fake._wake_results("a =!!not-base64 b =eyJ4IjogMX0= =eyJ5IjogMn0= =  c d =eyJ6IjogM30=")
    assert all(w.event.is_set() for w in waiters.values())
    assert waiters["a"].value is None  # not base64: read from the table
    assert waiters["b"].value == b'{"x": 1}'  # one value per id: the second is nobody's
    assert waiters["c"].value is None
