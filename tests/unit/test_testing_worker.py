"""celeriac.testing.start_worker: an in-process worker on the memory broker."""

from __future__ import annotations

import uuid

import pytest

from celeriac import Celeriac
from celeriac.testing import start_worker


def test_in_process_worker_on_memory_broker() -> None:
    name = uuid.uuid4().hex
    app = Celeriac("mem", broker=f"memory://{name}", backend=f"memory://{name}", set_as_current=False)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def boom() -> None:
        raise KeyError("nope")

    @app.task
    async def double(x: int) -> int:
        return 2 * x

    pending = add.delay(1, 1)
    with start_worker(app, concurrency=2):
        assert pending.get(timeout=5) == 2
        assert [add.delay(i, 1).get(timeout=5) for i in range(10)] == list(range(1, 11))
        assert double.delay(21).get(timeout=5) == 42
        with pytest.raises(KeyError):
            boom.delay().get(timeout=5)
    late = add.delay(5, 5)
    assert late.state == "PENDING"  # the worker stopped with the block


def test_autodiscover_imports_tasks_modules_of_listed_packages(tmp_path: object,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    from pathlib import Path

    root = Path(str(tmp_path))
    for package, body in {"shop": "", "billing": ""}.items():
        (root / package).mkdir()
        (root / package / "__init__.py").write_text(body)
    (root / "shop" / "tasks.py").write_text(
        "from celeriac import shared_task\n@shared_task\ndef restock(n):\n    return n\n")
    monkeypatch.syspath_prepend(str(root))
    import celeriac.app as app_module
    monkeypatch.setattr(app_module, "_shared_tasks", [])  # shared_task registers globally: keep it here
    monkeypatch.setattr(app_module, "_all_apps", [])
    name = uuid.uuid4().hex
    app = Celeriac("disco", broker=f"memory://{name}", backend=f"memory://{name}", set_as_current=False)
    app.autodiscover_tasks(["shop", "billing"], force=True)  # billing has no tasks module: skipped
    assert "shop.tasks.restock" in app.tasks
    assert "shop.tasks" in sys.modules


def test_start_worker_on_a_users_own_app_registers_ping_and_pings_its_own_queue() -> None:
    import time
    name = uuid.uuid4().hex
    app = Celeriac("own", broker=f"memory://{name}", backend=f"memory://{name}", set_as_current=False)
    assert "celery.ping" not in app.tasks  # Celery's test worker fails here unless its tasks module was imported
    started = time.monotonic()
    with start_worker(app, queues=["reports"]) as worker:  # no worker on the default queue: ping still answers
        assert time.monotonic() - started < 1.0
        assert app.send_task("celery.ping", queue="reports").get(timeout=5) == "pong"
        worker.reload()
    assert time.monotonic() - started < 2.0  # stopping took a fraction of a second


def test_start_worker_refuses_what_it_cannot_do() -> None:
    name = uuid.uuid4().hex
    app = Celeriac("bad", broker=f"memory://{name}", backend=f"memory://{name}", set_as_current=False)
    with pytest.raises(ValueError, match="pool='prefork'"):
        with start_worker(app, pool="prefork"):
            pass
    with pytest.raises(TypeError, match="does not support exclude_queues"):
        with start_worker(app, exclude_queues=["x"]):
            pass


def test_start_worker_on_an_unreachable_broker_fails_fast_with_its_url() -> None:
    import time
    app = Celeriac("down", broker="redis://127.0.0.1:9/0", backend="memory://down", set_as_current=False)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="127.0.0.1:9"):
        with start_worker(app, ready_timeout=30):
            pass
    assert time.monotonic() - started < 10  # not the whole ready_timeout
