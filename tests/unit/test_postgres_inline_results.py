"""A small final result rides inside its PostgreSQL NOTIFY, so the waiting client has it
without a SELECT (transports/postgres/results.py `_notice`); a big one, or a payload an older
reader sends, still works through the table."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celeriac, states
from celeriac.transports.postgres.wakeups import Wakeups

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

    from celeriac.transports.postgres.wakeups import Waiter

    fake = Wakeups.__new__(Wakeups)
    fake.lock = _threading.Lock()
    waiters = {name: Waiter([f"r:{name}"]) for name in ("a", "b", "c")}
    fake.waiters = {f"r:{name}": {w} for name, w in waiters.items()}
    fake._wake_results("a =!!not-base64 b =eyJ4IjogMX0= =eyJ5IjogMn0= =  c d =eyJ6IjogM30=")
    assert all(w.event.is_set() for w in waiters.values())
    assert waiters["a"].value is None  # not base64: read from the table
    assert waiters["b"].value == b'{"x": 1}'  # one value per id: the second is nobody's
    assert waiters["c"].value is None


def test_a_process_listens_only_on_what_it_waits_for_and_adds_a_kind_later(app: Celeriac) -> None:
    """A client hears results, not every message; a worker hears its queues, not every result.
    A kind first needed later is LISTENed (after a poke) before the waiter looks."""
    from celeriac.transports.postgres.database import PostgresDatabase
    from celeriac.transports.postgres.wakeups import wait_for

    shared = app.backend.db  # type: ignore[attr-defined]
    db = PostgresDatabase(shared.conninfo, shared.schema)  # its own listener: no other test's kinds
    wakeups = db.wakeups()
    assert wait_for(db, ["r:nothing"], lambda: None, 0.05) is None
    assert wakeups.listening == {"r", wakeups.own}
    assert wait_for(db, ["q:lonely"], lambda: None, 0.05) is None  # added while the thread waits
    assert wakeups.listening == {"r", "q", wakeups.own}
    with wakeups.watching(["e"]) as waiter:  # a third kind, then a notification of it
        assert wakeups.listening == {"r", "q", "e", wakeups.own}
        shared.run("SELECT pg_notify(%s, 'x')", (shared.channel("e"),))
        assert waiter.event.wait(5)
