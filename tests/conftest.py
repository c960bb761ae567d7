"""Test fixtures: brokers to parametrize over, and real worker processes."""

from __future__ import annotations

import os
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "integration"))

from helpers import INTEGRATION, WorkerProcess, fresh_postgres_url, result_store_url  # noqa: E402

BROKERS = ["sqlite", "redis", "amqp", "postgres"]
MAIN_GROUPS = 3  # scripts/test.sh runs MAIN_GROUPS + 1 xdist workers


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """scripts/test.sh runs xdist workers with --dist loadgroup: the `slow` tests (minutes of
    mostly waiting: a 2-minute task, beat replicas for a minute, servers stopped under load) run
    on one, in order, while the rest, split by module into MAIN_GROUPS groups, run beside them -
    so the waits overlap the work instead of adding to it. Most tests wait on worker processes
    rather than compute, so a 2-core machine runs more streams than it has cores."""
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        group = "waiting" if item.get_closest_marker("slow") else f"main{zlib.crc32(module.encode()) % MAIN_GROUPS}"
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """Under --dist loadgroup xdist tags each node id with its group; a pytest/xdist pair where
    that tag no longer takes (pytest 9.2 with xdist 3.8) spreads every module over every worker -
    each then boots its own RabbitMQ cluster, and the run slows and flakes. Stop rather than run so."""
    if node.config.getvalue("dist") == "loadgroup" and ids and "@" not in ids[0]:
        pytest.exit("pytest-xdist's --dist loadgroup did not tag the tests with their groups: this pytest and "
                    "pytest-xdist do not work together (see the pytest pin in pyproject.toml)", returncode=3)


@pytest.fixture(autouse=True)
def _release_sqlite_files(tmp_path: Path) -> Iterator[None]:
    """Each SQLite file a test opened (in its tmp_path) holds connections and an inotify
    instance in this process; give them back, or a long session runs out of inotify
    instances (128 per user by default) and every later wait falls back to polling."""
    yield
    from celeriac.transports.sqlite.database import SQLiteDatabase
    SQLiteDatabase.close_under(str(tmp_path))


@pytest.fixture(scope="session")
def rabbit_server() -> Iterator[Any]:
    from servers import RabbitServer
    server = RabbitServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def rabbit_cluster() -> Iterator[Any]:
    """Three clustered RabbitMQ nodes (quorum queues, failover URLs): started on first use only."""
    from servers import RabbitCluster
    cluster = RabbitCluster()
    yield cluster
    cluster.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Any]:
    from servers import RedisServer
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Any]:
    """A private 3-master Redis Cluster (tests/servers.py), made once per session (~3 s)."""
    from servers import RedisClusterServer
    server = RedisClusterServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    from servers import PostgresServer
    server = PostgresServer()
    yield server
    server.close()


@pytest.fixture(params=BROKERS)
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def urls(broker_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, str]:
    if broker_kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'celeriac.db'}"
        return url, url
    if broker_kind == "redis":
        server = request.getfixturevalue("redis_server")
        if not server.ping():  # a failure test may have left it stopped
            server.start()
        server.flush()
        return server.url, server.url
    if broker_kind == "redis-cluster":  # not in BROKERS: chosen by the tests that run on it
        from helpers import fresh_redis_cluster_url
        url = fresh_redis_cluster_url(request)
        return url, url
    if broker_kind == "amqp":  # RabbitMQ as broker, results in the SQLite default
        server = request.getfixturevalue("rabbit_server")
        if not server.ping():
            server.start()
        server.reset()
        return server.url, f"sqlite:///{tmp_path / 'results.db'}"
    if broker_kind == "postgres":  # broker and results in the same database
        url = fresh_postgres_url(request)
        return url, url
    raise AssertionError(broker_kind)


@pytest.fixture
def app_env(urls: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for the worker and this process: both use the broker of this test."""
    broker, backend = urls
    monkeypatch.setenv("CELERIAC_BROKER_URL", broker)
    monkeypatch.setenv("CELERIAC_RESULT_BACKEND", backend)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(INTEGRATION), env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def tasks(app_env: dict[str, str]) -> Iterator[Any]:
    """The integration tasks module, its app pointed at this test's broker."""
    import tasks_app
    tasks_app.app._reset_connections()
    yield tasks_app
    tasks_app.app._reset_connections()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that started workers shows what they logged (the end of it): a task that
    stayed PENDING says nothing about why, the worker's log usually does."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    workers = getattr(item, "celeriac_workers", None)
    if report.when == "call" and report.failed and workers:
        _ask_for_stacks(workers)
        for number, worker in enumerate(workers):
            tail = worker.output.splitlines()[-400:]
            report.sections.append((f"worker {number} ({' '.join(worker.cmd[1:])}): last {len(tail)} lines",
                                    "\n".join(tail)))


def _ask_for_stacks(workers: list[WorkerProcess]) -> None:
    """A worker still running when its test failed shows where each of its threads and pool
    processes is (SIGUSR1, as Celery's): a hung pool process then says where it hangs."""
    import signal
    live = [w for w in workers if w.proc.poll() is None]
    for worker in live:
        try:
            os.kill(worker.proc.pid, signal.SIGUSR1)
        except ProcessLookupError:
            continue
    deadline, sizes = time.monotonic() + 3, [-1] * len(live)
    while time.monotonic() < deadline:  # until every dump has arrived and the output is still
        now = [len(w.output) for w in live]
        if now == sizes and all("SIGUSR1: stack of every thread" in w.output for w in live):
            return
        sizes = now
        time.sleep(0.3)


@pytest.fixture
def start_worker(app_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    workers: list[WorkerProcess] = []
    request.node.celeriac_workers = workers  # for pytest_runtest_makereport above

    def start(*args: str, ready: bool = True, app: str = "tasks_app",
              env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(tmp_path, env or app_env, *args, app=app)
        workers.append(worker)
        if ready:
            worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()


RESULT_STORES = ["memory", "sqlite", "redis", "redis-cluster", "postgres"]


@pytest.fixture(params=RESULT_STORES)
def any_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh result store, once per kind: the result-store contract tests."""
    return result_store_url(str(request.param), tmp_path, request)


@pytest.fixture
def any_store(any_store_url: str) -> Iterator[Any]:
    from celeriac.backends import create_result_store
    store = create_result_store(any_store_url)
    yield store
    store.close()
