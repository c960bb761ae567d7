"""The Redis broker's wait for work ends on time (transports/redis/waiting.py), against a
private redis-server: Redis ends a blocked BLPOP only on its timer tick (every 100 ms at the
default hz), so the client keeps the deadline and ends the wait with CLIENT UNBLOCK."""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import pytest
import redis

from celeriac.transports.redis import waiting
from celeriac.transports.redis.waiting import TimelyWait

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def client(redis_server: Any) -> Iterator[redis.Redis]:
    if not redis_server.ping():
        redis_server.start()
    redis_server.flush()
    redis_server.command("CONFIG", "RESETSTAT")
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def _unblocks(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_client|unblock", {}).get("calls", 0))


def test_a_wait_that_runs_out_is_ended_by_the_client_not_by_redis_timer(client: redis.Redis,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # Redis is told 30 s, so only the client's own deadline can end these waits in time: with the
    # real (equal) timeout, a busy server ends some of them on its own first, which is correct
    # but makes the count below a race.
    monkeypatch.setattr(waiting, "_seconds", lambda seconds: "30")
    waiter = TimelyWait(client)
    for _ in range(3):
        started = time.monotonic()
        assert waiter.wait(["celeriac-test:signal"], 0.02) is None
        assert time.monotonic() - started < 10
    assert _unblocks(client) == 3  # each wait ended by its own deadline, not Redis' timeout
    assert not waiter.unblock_refused
    assert client.ping()  # the pool's connections carry no reply left over


def test_a_push_during_the_wait_ends_it_at_once_without_an_unblock(client: redis.Redis) -> None:
    waiter = TimelyWait(client)
    pusher = threading.Timer(0.1, lambda: client.lpush("celeriac-test:signal", "token"))
    pusher.start()
    started = time.monotonic()
    assert waiter.wait(["celeriac-test:other", "celeriac-test:signal"], 20) == b"token"
    assert time.monotonic() - started < 10
    pusher.join()
    assert _unblocks(client) == 0


def test_a_user_not_allowed_client_unblock_gets_redis_own_timeout(client: redis.Redis, redis_server: Any) -> None:
    client.execute_command("ACL", "SETUSER", "limited", "on", "nopass", "~*", "&*", "+@all", "-client|unblock")
    try:
        host, port = client.connection_pool.connection_kwargs["host"], client.connection_pool.connection_kwargs["port"]
        limited = redis.Redis(host=host, port=port, username="limited", password="")
        waiter = TimelyWait(limited)
        assert waiter.wait(["celeriac-test:signal"], 0.02) is None
        assert waiter.unblock_refused
        assert waiter.wait(["celeriac-test:signal"], 0.02) is None  # the plain BLPOP from now on
        limited.lpush("celeriac-test:signal", "token")
        assert waiter.wait(["celeriac-test:signal"], 5) == b"token"
        limited.close()
    finally:
        client.execute_command("ACL", "DELUSER", "limited")


def test_a_server_stopped_during_the_wait_raises_and_the_next_wait_reconnects(client: redis.Redis,
                                                                              redis_server: Any) -> None:
    waiter = TimelyWait(client)
    stopper = threading.Timer(0.2, redis_server.stop)
    stopper.start()
    try:
        with pytest.raises(redis.exceptions.ConnectionError):
            waiter.wait(["celeriac-test:signal"], 10)
    finally:
        stopper.join()
        redis_server.start()
    assert waiter.wait(["celeriac-test:signal"], 0.02) is None


def test_with_no_second_connection_free_the_wait_still_ends(redis_server: Any, client: redis.Redis) -> None:
    single = redis.Redis.from_url(redis_server.url, max_connections=1)  # the wait holds the only one
    waiter = TimelyWait(single)
    assert waiter.wait(["celeriac-test:signal"], 0.02) is None  # ended by Redis' own timeout instead
    assert not waiter.unblock_refused  # a busy pool is not a refusal: the next wait tries again
    single.lpush("celeriac-test:signal", "token")
    assert waiter.wait(["celeriac-test:signal"], 5) == b"token"
    single.close()


def test_a_command_sent_behind_the_wait_runs_when_it_ends(client: redis.Redis,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waiting, "_seconds", lambda seconds: "30")  # only the client's deadline ends them in time
    waiter = TimelyWait(client)
    pusher = threading.Timer(0.1, lambda: client.lpush("celeriac-test:signal", "token"))
    pusher.start()
    popped, reply = waiter.wait_then(["celeriac-test:signal"], 20, ("INCR", "celeriac-test:after"))
    assert (popped, reply) == (b"token", 1)  # the INCR ran once the BLPOP returned, in the same round trip
    assert waiter.wait_then(["celeriac-test:signal"], 0.02, ("INCR", "celeriac-test:after")) == (None, 2)
    # An error reply (here: a script Redis does not have) is read whole and answered None.
    assert waiter.wait_then(["celeriac-test:signal"], 0.02, ("EVALSHA", "0" * 40, 0)) == (None, None)
    assert client.ping() and _unblocks(client) == 2  # the connections carry no reply left over


def _fetch_broker(redis_server: Any) -> Any:
    from celeriac.brokers import create_broker

    return create_broker(redis_server.url, {"celery_wire_queues": []})


def test_a_woken_worker_gets_its_messages_from_the_fetch_sent_with_its_wait(client: redis.Redis,
                                                                           redis_server: Any) -> None:
    from celeriac.brokers import Outgoing

    broker, publisher = _fetch_broker(redis_server), _fetch_broker(redis_server)
    try:
        broker.fetch(["q"], "w1", "w1-0", 10, timeout=0)  # loads the FETCH script, as a worker's first look does
        looks = []
        real = broker._fetch_once
        broker._fetch_once = lambda *a: (looks.append(1), real(*a))[1]
        threading.Timer(0.2, lambda: publisher.publish([Outgoing("q", b"m1", 0, None)])).start()
        got = broker.fetch(["q"], "w1", "w1-0", 10, timeout=20)
        assert [d.payload for d in got] == [b"m1"]
        assert looks == [1]  # the first look found nothing; the message came with the wait, not a second look

        # Redis loses its scripts during the wait: the FETCH behind it fails, the next look loads it again.
        threading.Timer(0.1, lambda: redis_server.command("SCRIPT", "FLUSH")).start()
        threading.Timer(0.3, lambda: publisher.publish([Outgoing("q", b"m2", 0, None)])).start()
        looks.clear()
        got = broker.fetch(["q"], "w1", "w1-0", 10, timeout=20)
        assert [d.payload for d in got] == [b"m2"] and looks == [1, 1]
    finally:
        broker.close()
        publisher.close()
