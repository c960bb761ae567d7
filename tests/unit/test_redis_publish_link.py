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


class _Conn:
    """What ReplySpin reads of a redis-py connection: its socket."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock


def test_reply_spin_returns_at_once_when_the_reply_is_there_and_rests_after_late_replies() -> None:
    import socket
    import time

    from celeriac.transports.redis.publish import ReplySpin

    ours, server = socket.socketpair()
    try:
        spin = ReplySpin(budget_us=200_000)
        server.sendall(b"+OK\r\n")
        started = time.perf_counter()
        spin.wait(_Conn(ours))
        assert time.perf_counter() - started < 0.1 and spin.misses == 0
        assert ours.recv(16) == b"+OK\r\n"  # the look only peeked: the reader still gets the reply

        for missed in range(1, ReplySpin.MISSES):  # nothing comes: each look spends its budget
            started = time.perf_counter()
            spin.wait(_Conn(ours))
            assert time.perf_counter() - started >= 0.19 and spin.misses == missed
        spin.wait(_Conn(ours))
        assert spin.resting == ReplySpin.REST and spin.misses == 0  # a distant server: stop looking
        started = time.perf_counter()
        for _ in range(50):
            spin.wait(_Conn(ours))
        assert time.perf_counter() - started < 0.1 and spin.resting == ReplySpin.REST - 50
    finally:
        ours.close()
        server.close()


def test_reply_spin_follows_a_new_socket_and_zero_turns_it_off() -> None:
    import socket
    import time

    from celeriac.transports.redis.publish import ReplySpin

    first, first_peer = socket.socketpair()
    second, second_peer = socket.socketpair()
    try:
        spin = ReplySpin(budget_us=200_000)
        first_peer.sendall(b"+OK\r\n")
        spin.wait(_Conn(first))
        second_peer.sendall(b"+OK\r\n")  # a reconnect: the look must watch the new socket
        started = time.perf_counter()
        spin.wait(_Conn(second))
        assert time.perf_counter() - started < 0.1 and spin.misses == 0

        off = ReplySpin(budget_us=0)
        started = time.perf_counter()
        off.wait(_Conn(first_peer))  # nothing readable there, and no look
        assert time.perf_counter() - started < 0.1 and off.misses == 0
        off.wait(_Conn(None))  # not connected yet: nothing to look at
    finally:
        for sock in (first, first_peer, second, second_peer):
            sock.close()


def test_publishing_looks_for_replies_and_the_option_turns_it_off(app: Celeriac, redis_server: Any) -> None:
    add = app.tasks["link.add"]
    app.conf.celery_wire_queues = []  # both paths: the PUBLISH script, then kombu's list
    for i in range(100):
        add.delay(i, i)
    app.conf.celery_wire_queues = ["celery"]
    for i in range(100):
        add.delay(i, i)
    spin = app.broker._link._local.spin  # type: ignore[attr-defined]
    assert spin.budget_ns == 100_000  # the default: 100 µs
    assert app.control.queue_sizes(["celery"])["celery"]["ready"] == 200  # every reply read, none stale

    quiet = Celeriac("link", broker=redis_server.url, backend=redis_server.url,
                     broker_transport_options={"reply_spin_us": 0})
    try:
        quiet.send_task("link.add", (1, 1))
        assert quiet.broker._link._local.spin.budget_ns == 0  # type: ignore[attr-defined]
    finally:
        quiet.close()


def test_pooled_connections_look_for_replies_but_not_for_waiting_commands(redis_server: Any) -> None:
    from celeriac.transports.redis.client import client_for
    from celeriac.transports.redis.looking import LookingConnection

    if not redis_server.ping():
        redis_server.start()
    client = client_for(redis_server.url, {"reply_spin_us": 50_000})  # 50 ms: a miss would show
    assert client.connection_pool.connection_class is LookingConnection
    client.delete("looked")
    for _ in range(3):  # nothing to pop: each wait ends by its timeout, and is not a look that missed
        assert client.blpop(["looked"], timeout=0.05) is None
    conn = client.connection_pool.get_connection()
    try:
        assert conn._spin.misses == 0 and conn._spin.resting == 0
        assert conn._spin.budget_ns == 50_000_000
    finally:
        client.connection_pool.release(conn)
    pipe = client.pipeline(transaction=True)
    pipe.rpush("looked", 1, 2).lrange("looked", 0, -1).llen("looked")
    assert pipe.execute() == [2, [b"1", b"2"], 2]  # every reply of a pipeline read, in order
    assert client.lpop("looked") == b"1"
