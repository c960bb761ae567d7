"""The SQLite file's batch transactions and WAL upkeep."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from celeriac import Celeriac, protocol
from celeriac.transports.sqlite.database import SQLiteDatabase
from celeriac.brokers import Outgoing
from celeriac.worker.consumer import Batch


def _app(tmp_path: Path) -> Celeriac:
    url = f"sqlite:///{tmp_path / f'{uuid.uuid4().hex}.db'}"
    return Celeriac("t", broker=url, backend=url, set_as_current=False)


def test_batch_commits_results_and_acks_together_or_not_at_all(tmp_path: Path) -> None:
    app = _app(tmp_path)
    msg = protocol.build_task_message("t1", "x.y", (1,), {})
    app.broker.publish([Outgoing("celery", protocol.pack(msg))])
    [delivery] = app.broker.fetch(["celery"], "w", "w/0", 1, timeout=0)
    batch = Batch(app)
    batch.results.append(app.backend.encode(app.result_meta("t1", "SUCCESS", 7)))
    batch.acks.append(delivery)
    calls = {"n": 0}
    real_ack = app.broker.ack

    def failing_once(deliveries: list[object]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            from celeriac.exceptions import OperationalError
            raise OperationalError("disk trouble")
        real_ack(deliveries)  # type: ignore[arg-type]

    app.broker.ack = failing_once  # type: ignore[method-assign]
    batch.flush()  # the retry waits 0.1 s
    assert calls["n"] == 2  # the first attempt rolled back, the retry wrote everything
    assert app.backend.get("t1")["result"] == 7
    assert app.broker.queue_sizes(["celery"])["celery"] == {"ready": 0, "reserved": 0, "delayed": 0}


def test_a_failed_transaction_leaves_nothing_behind(tmp_path: Path) -> None:
    app = _app(tmp_path)
    app.backend  # noqa: B018 - resolved before any transaction, as the worker does
    db: SQLiteDatabase = app.broker.db  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError):
        with db.transaction():
            app.broker.publish([Outgoing("celery", b"first")])
            app.backend.store([app.backend.encode(app.result_meta("t2", "SUCCESS", 1))])
            raise RuntimeError("crash in the middle")
    assert app.broker.queue_sizes(["celery"])["celery"]["ready"] == 0
    assert app.backend.get("t2") is None


def test_shrink_wal_truncates_a_grown_wal(tmp_path: Path) -> None:
    app = _app(tmp_path)
    payload = b"x" * 4000
    for _ in range(20):
        app.broker.publish([Outgoing("celery", payload) for _ in range(50)])
    db: SQLiteDatabase = app.broker.db  # type: ignore[attr-defined]
    wal = db.path + "-wal"
    assert os.path.getsize(wal) > 1_000_000
    assert db.shrink_wal(limit=1_000_000) is True
    assert os.path.getsize(wal) == 0
    assert app.broker.queue_sizes(["celery"])["celery"]["ready"] == 1000  # nothing lost
    assert db.shrink_wal(limit=1_000_000) is False  # small now: nothing to do
