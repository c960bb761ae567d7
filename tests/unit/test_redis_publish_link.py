"""The Redis publish path's own connections (transports/redis/publish.py), against a private
redis-server: errors leave no half-read reply behind, a lost script cache is refilled, a
dropped connection is made again, a forked child never shares its parent's socket."""

from __future__ import annotations

import os
from typing import Any, Iterator

import pytest

from celeriac import Celeriac
from celeriac.exceptions import OperationalError

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def app(redis_server: Any) -> Iterator[Celeriac]:
    if not redis_server.ping():
        redis_server.start()
    redis_server.flush()
    app = Celeriac("link", broker=redis_server.url, backend=redis_server.url)

    @app.task(name="link.add")
    def add(x: int, y: int) -> int:
        return x + y

    yield app
    app.close()


def test_an_error_inside_the_transaction_raises_and_the_link_stays_usable(app: Celeriac) -> None:
    link = app.broker._link  # type: ignore[attr-defined]
    client = app.broker.client  # type: ignore[attr-defined]
    client.set("a-string", "x")
    with pytest.raises(Exception, match="WRONGTYPE"):
        link.transaction([("LPUSH", "a-string", "v"), ("LPUSH", "a-list", "v")])
    assert client.llen("a-list") == 1  # MULTI/EXEC: the others ran, as Redis does it
    with pytest.raises(Exception, match="WRONGTYPE"):
        link.pipeline([("LPUSH", "a-string", "v"), ("LPUSH", "a-list", "w")])
    assert link.pipeline([("LLEN", "a-list"), ("GET", "a-string")]) == [2, b"x"]  # no stale replies


def test_delay_reaches_redis_after_its_script_cache_and_connection_are_lost(app: Celeriac,
                                                                         redis_server: Any) -> None:
    add = app.tasks["link.add"]
    app.conf.celery_wire_queues = []  # celeriac's own layout: the PUBLISH script
    add.delay(1, 1)
    redis_server.command("SCRIPT", "FLUSH")
    redis_server.command("CLIENT", "KILL", "TYPE", "normal")
    add.delay(2, 2)
    assert app.control.queue_sizes(["celery"])["celery"]["ready"] == 2


def test_a_stopped_server_is_an_operational_error_naming_the_call(app: Celeriac, redis_server: Any) -> None:
    add = app.tasks["link.add"]
    add.delay(1, 1)
    app.conf.task_publish_retry = False
    redis_server.stop()
    try:
        with pytest.raises(OperationalError, match="publish"):
            add.delay(2, 2)
    finally:
        redis_server.start()
    add.delay(3, 3)  # the link connects again
    assert app.control.queue_sizes(["celery"])["celery"]["ready"] == 2


def test_a_forked_child_publishes_on_its_own_connection(app: Celeriac) -> None:
    add = app.tasks["link.add"]
    add.delay(0, 0)
    parent_conn = app.broker._link._connection()  # type: ignore[attr-defined]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: publish, say whether its connection was the parent's, exit at once
        ok = True
        try:
            add.delay(1, 1)
            ok = app.broker._link._connection() is not parent_conn  # type: ignore[attr-defined]
        except BaseException:
            ok = False
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    add.delay(2, 2)  # the parent's own connection still works
    assert app.control.queue_sizes(["celery"])["celery"]["ready"] == 3
