"""Redis Sentinel with real workers: a master, a replica and three sentinels on loopback
(tests/servers.py), and a failover while tasks run. docs/redis-topologies.md.

"Acknowledged" here means what it means to an application: `delay()` returned (it raised
nothing). The broker and the result store run with `wait_replicas: 1`: every write is
confirmed by the replica before Redis' reply counts, so the replica that a failover promotes
holds every acknowledged message and every stored result.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from celeriac import Celeriac, states
from celeriac.brokers import Outgoing
from celeriac.exceptions import ImproperlyConfigured, OperationalError
from helpers import WorkerProcess, wait_until

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def broker_kind() -> str:
    """app_env's broker: Redis (its private server, only flushed here); the sentinels' URLs replace it."""
    return "redis"

MASTER = "mymaster"


@pytest.fixture(scope="module")
def sentinels() -> Iterator[Any]:
    from servers import RedisSentinelServers
    servers = RedisSentinelServers()
    yield servers
    servers.close()


@pytest.fixture
def sentinel_env(sentinels: Any, app_env: dict[str, str], tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """This process and the workers on the sentinels' master (tasks_app with transport options)."""
    sentinels.wait_synced()
    sentinels.flush()
    options = {"master_name": MASTER, "wait_replicas": 1, "wait_replicas_timeout": 2.0}
    (tmp_path / "sentinel_app.py").write_text(
        "import json, os\nfrom tasks_app import *  # noqa\nfrom tasks_app import app\n"
        "app.conf.broker_transport_options = json.loads(os.environ['SENTINEL_TEST_OPTIONS'])\n")
    monkeypatch.setenv("CELERIAC_BROKER_URL", sentinels.url)
    monkeypatch.setenv("CELERIAC_RESULT_BACKEND", sentinels.url)
    env = dict(app_env, CELERIAC_BROKER_URL=sentinels.url, CELERIAC_RESULT_BACKEND=sentinels.url,
               SENTINEL_TEST_OPTIONS=json.dumps(options), PYTHONPATH=f"{tmp_path}:{app_env['PYTHONPATH']}")
    import tasks_app
    before = tasks_app.app.conf.get("broker_transport_options")
    tasks_app.app.conf.broker_transport_options = options
    tasks_app.app._reset_connections()
    yield env
    tasks_app.app.conf.broker_transport_options = before
    tasks_app.app._reset_connections()


def test_tasks_run_through_the_sentinels_master(sentinel_env: dict[str, str], tmp_path: Path,
                                                sentinels: Any) -> None:
    import tasks_app
    worker = WorkerProcess(tmp_path, sentinel_env, "-c", "2", app="sentinel_app")
    try:
        worker.wait_ready()
        results = [tasks_app.add.delay(i, 1) for i in range(20)]
        assert [r.get(timeout=30) for r in results] == [i + 1 for i in range(20)]
        assert sentinels.node_on(sentinels.current_master_port()).command("DBSIZE") != b":0\r\n"
    finally:
        worker.stop()


@pytest.mark.slow
def test_failover_mid_run_loses_no_acknowledged_task(sentinel_env: dict[str, str], tmp_path: Path,
                                                     sentinels: Any) -> None:
    """2,000 tasks; SENTINEL FAILOVER once some have run and while more are being sent. Every
    task whose delay() returned runs to SUCCESS, on a worker that was never restarted."""
    import tasks_app
    total = 2000
    old_master = sentinels.current_master_port()
    worker = WorkerProcess(tmp_path, sentinel_env, "-c", "4", app="sentinel_app")
    acknowledged: list[Any] = []
    numbers: list[int] = []
    refused: list[str] = []

    def send() -> None:
        for i in range(total):
            try:
                acknowledged.append(tasks_app.add.delay(i, 0))
                numbers.append(i)
            except OperationalError as exc:  # not acknowledged: the caller was told
                refused.append(str(exc))

    try:
        worker.wait_ready()
        sender = threading.Thread(target=send)
        sender.start()
        wait_until(lambda: len(acknowledged) >= 500, 60, message="500 tasks sent")
        wait_until(lambda: tasks_app.app.backend.get_many([acknowledged[100].id]), 60,
                   message="the worker has run some")
        sentinels.failover()
        assert len(acknowledged) < total, "the failover came too late to test anything"
        sender.join(240)
        assert not sender.is_alive()
        wait_until(lambda: sentinels.current_master_port() != old_master, 30, message="the sentinels' new master")
        ids = [r.id for r in acknowledged]

        def finished() -> int:
            try:
                metas = tasks_app.app.backend.get_many(ids)
            except OperationalError:
                return -1  # the new master is still being found
            return sum(1 for m in metas.values() if m.get("status") == states.SUCCESS)

        try:
            wait_until(lambda: finished() == len(ids), 120, interval=0.5, message="every acknowledged task SUCCESS")
        finally:
            print(f"sent {total}: {len(acknowledged)} acknowledged, {len(refused)} refused "
                  f"({refused[:1]}); {finished()} acknowledged tasks finished")
            Path("/tmp/redisha-worker.log").write_text(worker.output)
        assert len(acknowledged) + len(refused) == total
        assert worker.proc.poll() is None, "the worker followed the failover without a restart"
        metas = tasks_app.app.backend.get_many(ids)
        assert [metas[task_id]["result"] for task_id in ids] == numbers
    finally:
        worker.stop()


def test_sentinel_url_without_master_name_is_a_clear_error(sentinels: Any) -> None:
    app = Celeriac("s", broker=sentinels.url, set_as_current=False)
    with pytest.raises(ImproperlyConfigured, match="master_name"):
        app.broker.publish([Outgoing("celery", b"x")])


def test_unreachable_sentinels_error_names_them_without_password() -> None:
    from servers import free_port
    port = free_port()
    app = Celeriac("s", broker=f"sentinel://:pw-secret@127.0.0.1:{port}", set_as_current=False,
                   broker_transport_options={"master_name": MASTER}, task_publish_retry=False)
    with pytest.raises(OperationalError) as info:
        app.broker.publish([Outgoing("celery", b"x")])
    text = str(info.value)
    assert f"127.0.0.1:{port}" in text and "pw-secret" not in text and MASTER in text, text
