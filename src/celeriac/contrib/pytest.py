"""pytest fixtures for testing your tasks, with Celery's names and meanings.

Installed with the package (the `pytest11` entry point), so nothing needs enabling:

    def test_add(celery_app, celery_worker):
        @celery_app.task
        def add(x, y):
            return x + y

        assert add.delay(2, 3).get(timeout=5) == 5

Every fixture also answers to a `celeriac_` name (`celeriac_app`, `celeriac_worker`,
`celeriac_config`, ...; the trap is `use_celeriac_app_trap`); overriding either name works.
The test app runs on a private in-process broker and result store (`memory://<unique>`):
messages and results are encoded exactly as on SQLite, Redis or RabbitMQ, so what cannot
be serialized fails here too, and nothing outside the test process is touched. See
docs/testing.md.
"""

from __future__ import annotations

import logging
import uuid
import warnings
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import pytest

if TYPE_CHECKING:  # imported when a fixture is used: pytest loads this plugin in every session
    from .. import testing
    from ..app import Celeriac

#: What the test app runs on unless `celery_config` or the `celery` marker says otherwise.
DEFAULT_TEST_CONFIG: dict[str, Any] = {
    "task_always_eager": False,
    "worker_heartbeat_interval": 1.0,
}

_TRAPPED = ("this test uses the current app (shared_task, AsyncResult without app=, celeriac.current_app) "
            "while use_celery_app_trap is on; pass the app explicitly, or request the "
            "depends_on_current_app fixture")


def pytest_configure(config: pytest.Config) -> None:
    for name in ("celery", "celeriac"):
        config.addinivalue_line(
            "markers", f"{name}(**settings): override the test app's configuration for a test or a class "
                       f"(celeriac.contrib.pytest)")


class _AppTrap:
    """Stands in for the current app while the trap is on: any use of it fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(_TRAPPED)

    def __bool__(self) -> bool:
        return True


def _memory_url() -> str:
    return f"memory://celeriac-test-{uuid.uuid4().hex[:12]}"


# Result backends Celery test suites name that live in the test process (Celery's own test
# default is cache+memory://): they become the app's private memory store.
_CELERY_IN_PROCESS_BACKENDS = ("cache+memory", "rpc")


def _private_memory(url: str | None) -> str | None:
    """A bare `memory://` (Celery's test default, one shared transport) becomes a private one,
    so that no two test apps share queues or results."""
    if url and url.rstrip("/") in ("memory:", "memory"):
        return _memory_url()
    return url


def _settings(config: Mapping[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    """celery_config, then the closest `celery`/`celeriac` marker on top (Celery's precedence)."""
    settings = {**DEFAULT_TEST_CONFIG, **dict(config)}
    for name in ("celery", "celeriac"):
        mark = request.node.get_closest_marker(name)
        if mark is not None:
            if mark.args:
                raise TypeError(f"@pytest.mark.{name}() takes settings as keyword arguments, got {mark.args!r}")
            settings.update(mark.kwargs)
    return settings


def _pin_urls(app: Celeriac, settings: Mapping[str, Any]) -> None:
    """The test app talks to exactly the configured URLs: CELERIAC_BROKER_URL and
    CELERIAC_RESULT_BACKEND (which override an app's URLs elsewhere) are ignored here, so a
    shell pointed at a real server never receives test tasks."""
    from ..app import _canonical_url
    from ..capabilities import keeps_results
    broker = _private_memory(settings.get("broker_url")) or _memory_url()
    backend = _private_memory(settings.get("result_backend"))
    if backend and backend.split("://", 1)[0] in _CELERY_IN_PROCESS_BACKENDS:
        warnings.warn(f"celeriac.contrib.pytest: result_backend {backend!r} is Celery's; the test app "
                      f"keeps its results in a private in-process store (memory://) instead", stacklevel=2)
        backend = _memory_url()
    if not backend:
        backend = broker if keeps_results(broker) else _memory_url()
    app.conf.update(broker_url=broker, result_backend=backend)
    app._reset_connections()
    app._resolved_broker_url = _canonical_url(broker)
    app._resolved_backend_url = _canonical_url(backend)


@contextmanager
def _test_app(settings: dict[str, Any], parameters: Mapping[str, Any], enable_logging: bool,
              use_trap: bool) -> Iterator[Celeriac]:
    """A fresh app for a test (or a session), the current app while it lives unless trapped."""
    from .. import app as app_module
    params = dict(parameters)
    main = params.pop("main", "celeriac.tests")
    params.pop("set_as_current", None)  # the fixture decides (and restores the previous app after)
    if params.get("broker"):
        settings["broker_url"] = params["broker"]
    if params.get("backend"):
        settings["result_backend"] = params["backend"]
    params.pop("broker", None)
    params.pop("backend", None)
    app = app_module.Celeriac(main, set_as_current=False, **params)
    app.conf.update({k: v for k, v in settings.items() if k not in ("broker_url", "result_backend")})
    _pin_urls(app, settings)
    previous = getattr(app_module._state, "app", None), app_module._default_app
    stand_in: Any = _AppTrap() if use_trap else app
    app_module._state.app, app_module._default_app = stand_in, stand_in
    logger = logging.getLogger("celeriac")
    level = logger.level
    if enable_logging:
        logger.setLevel(logging.INFO)  # the worker's received/succeeded lines reach pytest's log capture
    try:
        yield app
    finally:
        logger.setLevel(level)
        app_module._state.app, app_module._default_app = previous
        if app in app_module._all_apps:  # shared tasks need not be registered on it any more
            app_module._all_apps.remove(app)
        app.close()


@contextmanager
def _embedded_worker(app: Celeriac, includes: Sequence[str], pool: str, class_tasks: Sequence[Any],
                     parameters: Mapping[str, Any]) -> Iterator[testing.TestWorker]:
    import importlib

    from .. import testing
    for module in includes:
        importlib.import_module(module)
    for task in class_tasks:
        app.register_task(task() if isinstance(task, type) else task)
    options = dict(parameters)
    options.setdefault("pool", pool)
    with testing.start_worker(app, **options) as worker:
        yield worker


# --- settings fixtures: override any of them (either name) in your conftest.py ---

@pytest.fixture(scope="session")
def celeriac_config() -> Mapping[str, Any]:
    """Settings of the test app (a dict of Celery/celeriac setting names)."""
    return {}


@pytest.fixture(scope="session")
def celery_config(celeriac_config: Mapping[str, Any]) -> Mapping[str, Any]:
    """Settings of the test app (a dict of Celery/celeriac setting names)."""
    return celeriac_config


@pytest.fixture(scope="session")
def celeriac_parameters() -> Mapping[str, Any]:
    """Keyword arguments for the test app's constructor (`Celeriac(**parameters)`)."""
    return {}


@pytest.fixture(scope="session")
def celery_parameters(celeriac_parameters: Mapping[str, Any]) -> Mapping[str, Any]:
    """Keyword arguments for the test app's constructor (`Celeriac(**parameters)`)."""
    return celeriac_parameters


@pytest.fixture(scope="session")
def celeriac_worker_parameters() -> Mapping[str, Any]:
    """Options of the embedded worker: concurrency, queues, hostname, shutdown_timeout,
    perform_ping_check, ping_task_timeout."""
    return {}


@pytest.fixture(scope="session")
def celery_worker_parameters(celeriac_worker_parameters: Mapping[str, Any]) -> Mapping[str, Any]:
    """Options of the embedded worker (see celeriac_worker_parameters)."""
    return celeriac_worker_parameters


@pytest.fixture(scope="session")
def celeriac_includes() -> Sequence[str]:
    """Modules the embedded worker imports before it starts (task modules, signal handlers)."""
    return ()


@pytest.fixture(scope="session")
def celery_includes(celeriac_includes: Sequence[str]) -> Sequence[str]:
    """Modules the embedded worker imports before it starts (task modules, signal handlers)."""
    return celeriac_includes


@pytest.fixture(scope="session")
def celeriac_enable_logging() -> bool:
    """True: the worker logs at INFO (each task received and finished) into pytest's log capture."""
    return False


@pytest.fixture(scope="session")
def celery_enable_logging(celeriac_enable_logging: bool) -> bool:
    """True: the worker logs at INFO into pytest's log capture."""
    return celeriac_enable_logging


@pytest.fixture(scope="session")
def use_celeriac_app_trap() -> bool:
    """True: using the current app (instead of the fixture's app) fails the test."""
    return False


@pytest.fixture(scope="session")
def use_celery_app_trap(use_celeriac_app_trap: bool) -> bool:
    """True: using the current app (instead of the fixture's app) fails the test."""
    return use_celeriac_app_trap


@pytest.fixture(scope="session")
def celeriac_worker_pool() -> str:
    """"solo" (one task at a time, Celery's default for test workers) or "thread"."""
    return "solo"


@pytest.fixture(scope="session")
def celery_worker_pool(celeriac_worker_pool: str) -> str:
    """"solo" (one task at a time, Celery's default for test workers) or "thread"."""
    return celeriac_worker_pool


@pytest.fixture(scope="session")
def celeriac_class_tasks() -> Sequence[Any]:
    """Task classes (or instances) to register on the test app."""
    return []


@pytest.fixture(scope="session")
def celery_class_tasks(celeriac_class_tasks: Sequence[Any]) -> Sequence[Any]:
    """Task classes (or instances) to register on the test app."""
    return celeriac_class_tasks


# --- apps and workers ---

@pytest.fixture(scope="session")
def celery_session_app(request: pytest.FixtureRequest, celery_config: Mapping[str, Any],
                       celery_parameters: Mapping[str, Any], celery_enable_logging: bool,
                       use_celery_app_trap: bool) -> Iterator[Celeriac]:
    """An app for the whole session (for session-scoped fixtures and the session worker)."""
    with _test_app(_settings(celery_config, request), celery_parameters, celery_enable_logging,
                   use_celery_app_trap) as app:
        yield app


@pytest.fixture(scope="session")
def celeriac_session_app(celery_session_app: Celeriac) -> Celeriac:
    """The session app (same object as celery_session_app)."""
    return celery_session_app


@pytest.fixture(scope="session")
def celery_session_worker(celery_session_app: Celeriac, celery_includes: Sequence[str],
                          celery_class_tasks: Sequence[Any], celery_worker_pool: str,
                          celery_worker_parameters: Mapping[str, Any]) -> Iterator[testing.TestWorker]:
    """A worker, in threads of this process, for the whole session (on celery_session_app)."""
    with _embedded_worker(celery_session_app, celery_includes, celery_worker_pool, celery_class_tasks,
                          celery_worker_parameters) as worker:
        yield worker


@pytest.fixture(scope="session")
def celeriac_session_worker(celery_session_worker: testing.TestWorker) -> testing.TestWorker:
    """The session worker (same object as celery_session_worker)."""
    return celery_session_worker


@pytest.fixture()
def celery_app(request: pytest.FixtureRequest, celery_config: Mapping[str, Any],
               celery_parameters: Mapping[str, Any], celery_enable_logging: bool,
               use_celery_app_trap: bool) -> Iterator[Celeriac]:
    """A fresh app for this test, on its own in-process broker and result store."""
    with _test_app(_settings(celery_config, request), celery_parameters, celery_enable_logging,
                   use_celery_app_trap) as app:
        yield app


@pytest.fixture()
def celeriac_app(celery_app: Celeriac) -> Celeriac:
    """The test's app (same object as celery_app)."""
    return celery_app


@pytest.fixture()
def celery_worker(celery_app: Celeriac, celery_includes: Sequence[str], celery_class_tasks: Sequence[Any],
                  celery_worker_pool: str,
                  celery_worker_parameters: Mapping[str, Any]) -> Iterator[testing.TestWorker]:
    """A worker in threads of this process for this test, stopped when the test returns."""
    with _embedded_worker(celery_app, celery_includes, celery_worker_pool, celery_class_tasks,
                          celery_worker_parameters) as worker:
        yield worker


@pytest.fixture()
def celeriac_worker(celery_worker: testing.TestWorker) -> testing.TestWorker:
    """The test's worker (same object as celery_worker)."""
    return celery_worker


@pytest.fixture()
def depends_on_current_app(celery_app: Celeriac) -> None:
    """Make the test's app the current one, even with the app trap on."""
    celery_app.set_current()
    from .. import app as app_module
    app_module._default_app = celery_app
