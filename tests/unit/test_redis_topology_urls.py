"""The URLs of Redis Cluster and Redis Sentinel (celeriac.transports.redis.topology), and `wait_replicas`
on a server that has no replica. No cluster or sentinel needed here."""

from __future__ import annotations

from typing import Any

import pytest

from celeriac.transports.redis.keys import Keys, QueueKeys
from celeriac.transports.redis.topology import parse_nodes, slot_of
from celeriac.brokers import Outgoing, create_broker
from celeriac.exceptions import ImproperlyConfigured, OperationalError

pytestmark = pytest.mark.timeout(60)


def test_cluster_url_nodes_credentials_and_default_port() -> None:
    nodes = parse_nodes("redis+cluster://app:s%40cret@10.0.0.1:7000;10.0.0.2;redis+cluster://10.0.0.3:7002", 6379)
    assert nodes.hosts == [("10.0.0.1", 7000), ("10.0.0.2", 6379), ("10.0.0.3", 7002)]
    assert (nodes.username, nodes.password, nodes.db, nodes.tls) == ("app", "s@cret", 0, False)
    assert parse_nodes("rediss+cluster://h:1", 6379).tls


def test_celery_sentinel_url_form() -> None:
    nodes = parse_nodes("sentinel://:pw@h1:26379/2;sentinel://h2:26380;sentinel://h3", 26379)
    assert nodes.hosts == [("h1", 26379), ("h2", 26380), ("h3", 26379)]
    assert (nodes.password, nodes.db) == ("pw", 2)


def test_bad_urls_are_one_line_errors_without_the_password() -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        create_broker("redis+cluster://:pw-secret@127.0.0.1:7000/3")
    assert "only database 0" in str(info.value) and "pw-secret" not in str(info.value)
    with pytest.raises(ImproperlyConfigured, match="no host"):
        create_broker("redis+cluster://")
    with pytest.raises(ImproperlyConfigured, match="master_name"):
        create_broker("sentinel://127.0.0.1:26379").publish([Outgoing("q", b"x")])


def test_keys_of_one_queue_share_a_slot_and_queues_spread() -> None:
    for queue in ("celery", "emails", "a}b", "{odd", "名前"):
        slots = {slot_of(k) for k in QueueKeys("celeriac", queue).block()}
        assert len(slots) == 1, (queue, slots)
    assert len({slot_of(QueueKeys("celeriac", f"q{i}").ready) for i in range(20)}) > 10
    keys = Keys("app")
    assert slot_of(keys.result("t1")) == slot_of(keys.done("t1"))
    assert slot_of(keys.chord("g")) == slot_of(keys.chord_parts("g"))
    assert len({slot_of(k) for k in (keys.workers, keys.workerinfo, keys.queues)}) == 1
    assert keys.queue_of_ready_key(keys.ready("a}b")) == "a}b"


def test_wait_replicas_refuses_a_write_no_replica_confirmed(redis_server: Any) -> None:
    """A master without replicas cannot confirm a write: the publish is an error saying so."""
    if not redis_server.ping():
        redis_server.start()
    redis_server.flush()
    broker = create_broker(redis_server.url, {"wait_replicas": 1, "wait_replicas_timeout": 0.2})
    try:
        with pytest.raises(OperationalError, match="NOTREPLICATED .* 0 of 1 replica"):
            broker.publish([Outgoing("q", b"x")])
        plain = create_broker(redis_server.url)
        assert plain.queue_sizes(["q"])["q"]["ready"] == 1  # on the master all the same: at-least-once
        plain.close()
    finally:
        broker.close()


@pytest.mark.parametrize("queue", ["native", "celery"])  # celeriac's layout, and kombu's list (a wire queue)
def test_wait_replicas_refuses_an_asyncio_publish_too(redis_server: Any, queue: str) -> None:
    import asyncio

    from celeriac import Celeriac
    if not redis_server.ping():
        redis_server.start()
    redis_server.flush()
    app = Celeriac("w", broker=redis_server.url, set_as_current=False, task_publish_retry=False,
                   broker_transport_options={"wait_replicas": 1, "wait_replicas_timeout": 0.2})

    @app.task(name="w.add")
    def add(x: int, y: int) -> int:
        return x + y

    async def send() -> None:
        await add.aapply_async((1, 2), queue=queue)

    with pytest.raises(OperationalError, match="NOTREPLICATED"):
        asyncio.run(send())
    with pytest.raises(OperationalError, match="NOTREPLICATED"):
        add.apply_async((1, 2), queue=queue)
