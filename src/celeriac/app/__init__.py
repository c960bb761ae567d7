"""Celeriac: configuration, the task registry, routing and sending tasks."""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import threading
from datetime import datetime, UTC
from typing import (TYPE_CHECKING, Any, Callable, Coroutine, Iterable, Literal, ParamSpec, Protocol,
                    Sequence, TypeVar, overload)

from .. import celery_urls, protocol, signals, states
from ..brokers import Broker, create_broker, safe_url
from ..backends import ResultStore, create_result_store
from ..capabilities import Capabilities, keeps_results
from ..config import DEFAULT_SQLITE_FILE, Settings, env_urls
from .._options import check_task_options
from .sending import Sending, _seconds
from .._pydantic import PYDANTIC_OPTIONS, pydantic_task_function
from ..exceptions import EncodeError, ImproperlyConfigured, NotRegistered
from ..result import AsyncResult
from ..result import AsyncResult as ResultHandle
from ..task import AsyncTask, Context
from ..task import Task as BaseTask

if TYPE_CHECKING:
    from typing_extensions import Concatenate

    from ..control import Control

P = ParamSpec("P")
R = TypeVar("R")
logger = logging.getLogger("celeriac.app")


class _TaskDecorator(Protocol):
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> AsyncTask[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> BaseTask[P, R]: ...


class _BoundTaskDecorator(Protocol):
    @overload
    def __call__(self, fn: "Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]") -> AsyncTask[P, R]: ...
    @overload
    def __call__(self, fn: "Callable[Concatenate[Any, P], R]") -> BaseTask[P, R]: ...


class TaskRegistry(dict[str, BaseTask[Any, Any]]):
    """name -> task; a missing name raises NotRegistered."""

    def __missing__(self, key: str) -> BaseTask[Any, Any]:
        raise NotRegistered(key)


_state = threading.local()
_default_app: "Celeriac | None" = None
_all_apps: list["Celeriac"] = []
_shared_tasks: list[tuple[Callable[..., Any], dict[str, Any]]] = []


def current_app() -> "Celeriac":
    """The app most recently created (or a default app on the embedded SQLite file)."""
    global _default_app
    app = getattr(_state, "app", None) or _default_app
    if app is None:
        app = _default_app = Celeriac("default")
    return app


class Celeriac(Sending):
    """The application: `Celeriac("my_app")` runs on the embedded SQLite file, no server."""

    Task: type[BaseTask[Any, Any]] = BaseTask

    def __init__(self, main: str | None = None, broker: str | None = None, backend: str | None = None, *,
                 include: Iterable[str] | None = None, set_as_current: bool = True,
                 task_cls: type[BaseTask[Any, Any]] | None = None, config_source: Any = None,
                 **settings: Any) -> None:
        global _default_app
        self.main = main
        self.conf = Settings(on_change=self._setting_changed)
        if config_source is not None:
            self.conf.load_object(config_source)
        self.conf.update(settings)
        if broker:
            self.conf.broker_url = broker
        if backend:
            self.conf.result_backend = backend
        if include:
            self.conf.include = list(self.conf.include) + list(include)
        if task_cls is not None:
            self.Task = task_cls
        self.tasks = TaskRegistry()
        self._broker: Broker | None = None
        self._backend: ResultStore | None = None
        self._resolved_broker_url: str | None = None
        self._resolved_backend_url: str | None = None
        self._autodiscover: list[tuple[Any, str]] = []
        self._control: "Control | None" = None
        self._events: Any = None
        self._sent_events: Any = None
        self._plain_plans: dict[tuple[Any, ...], Any] = {}  # app/plain.py: templates of plain calls
        self.finalized = False
        self.on_after_configure = signals.Signal("on_after_configure")
        self.on_after_finalize = signals.Signal("on_after_finalize")
        self._periodic: list[dict[str, Any]] = []
        _all_apps.append(self)
        if set_as_current:
            self.set_current()
            _default_app = self
        for fn, options in _shared_tasks:
            self._create_task(fn, dict(options))
        from ..builtins import register_builtins
        register_builtins(self)

    _TRANSPORT_SETTINGS = frozenset({
        "broker_url", "result_backend", "broker_transport_options", "broker_use_ssl", "redis_backend_use_ssl",
        "result_backend_transport_options", "result_expires", "result_serializer", "accept_content",
        "result_accept_content", "celery_wire_queues", "task_queue_max_priority", "task_default_queue_type",
        "task_queues", "task_max_deliveries"})

    def _setting_changed(self, key: str) -> None:
        if key == "broker_url" or key == "result_backend":
            _load_transport(self.conf._data[key], "broker" if key == "broker_url" else "results")
        if key in self._TRANSPORT_SETTINGS and getattr(self, "_broker", None) is not None \
                or key in self._TRANSPORT_SETTINGS and getattr(self, "_backend", None) is not None:
            self._reset_connections()

    def set_current(self) -> None:
        _state.app = self

    # --- configuration ---

    def config_from_object(self, obj: Any, namespace: str | None = None, silent: bool = False,
                           force: bool = False) -> None:
        """Load settings from a module, module path ("proj.settings") or object."""
        try:
            self.conf.load_object(obj, namespace=namespace)
        except ImportError:
            if not silent:
                raise
        self._reset_connections()

    def config_from_envvar(self, variable_name: str, silent: bool = False) -> None:
        module_name = os.environ.get(variable_name)
        if not module_name:
            if silent:
                return
            raise ImproperlyConfigured(f"environment variable {variable_name} is not set")
        self.config_from_object(module_name, silent=silent)

    def start(self, argv: Sequence[str] | None = None) -> None:
        """Run a celeriac command for this app, as Celery's `app.start()`: a module ending in
        `if __name__ == "__main__": app.start()` serves `python myapp.py worker -l INFO`."""
        import sys

        from ..cli import run_for_app
        args = list(sys.argv[1:] if argv is None else argv)
        if args and args[0] == sys.argv[0]:  # Celery's form passes the whole sys.argv
            args = args[1:]
        run_for_app(self, args)

    def worker_main(self, argv: Sequence[str] | None = None) -> None:
        """`app.worker_main(["worker", "--loglevel=INFO"])`, as in Celery."""
        args = list(argv or ["worker"])
        if args[0] != "worker":
            raise ValueError("worker_main() runs the worker: argv must start with 'worker' "
                             "(use app.start(argv) for other commands)")
        self.start(args)

    def autodiscover_tasks(self, packages: Any = None, related_name: str = "tasks", force: bool = False) -> None:
        """Import `<package>.tasks` for each package (a list, or a callable returning one)."""
        self._autodiscover.append((packages, related_name))
        if force:
            self._import_autodiscovered()

    def _import_autodiscovered(self) -> None:
        for packages, related_name in self._autodiscover:
            if packages is None:  # Celery's Django set-up: every installed Django app
                packages = _django_installed_apps()
            names = packages() if callable(packages) else (packages or [])
            for package in names:
                try:
                    importlib.import_module(f"{package}.{related_name}")
                except ModuleNotFoundError as exc:
                    if exc.name != f"{package}.{related_name}":
                        raise

    def import_default_modules(self) -> None:
        from ..contrib.django import is_django_project, setup_django
        if is_django_project():  # task modules import models: Django's apps must be loaded first
            setup_django()
        signals.import_modules.send(sender=self)
        for name in list(self.conf.imports or []) + list(self.conf.include or []):
            importlib.import_module(name)
        self._import_autodiscovered()

    def finalize(self) -> None:
        """Done by the worker and beat once the task modules are imported."""
        if not self.finalized:
            self.finalized = True
            from ..celery_settings import warn_about_settings
            from ..contrib.django import is_django_project
            warn_about_settings(self.conf)
            if is_django_project():
                from ..contrib.django import fixup
                fixup.install()
            self.on_after_configure.send(sender=self)
            self.on_after_finalize.send(sender=self)

    def add_periodic_task(self, schedule: Any, sig: Any, args: Any = (), kwargs: Any = (),
                          name: str | None = None, **options: Any) -> str:
        """Run `sig` on `schedule` (seconds, timedelta, schedule(...) or crontab(...)) under
        `celeriac beat`, as a `beat_schedule` entry named `name` (default: the signature)."""
        from ..canvas import Signature
        if not isinstance(sig, Signature) or type(sig) is not Signature:
            raise TypeError(f"add_periodic_task needs a task signature such as add.s(2, 3), not {sig!r}: "
                            "to run a workflow periodically, schedule a task that starts it")
        key = name or repr(sig)
        spec: dict[str, Any] = {"task": sig.name, "schedule": schedule,
                                "args": tuple(sig.args) + tuple(args or ()),
                                "kwargs": {**sig.kwargs, **dict(kwargs or {})},
                                "options": {**{k: v for k, v in sig.options.items()
                                               if k not in ("task_id", "link", "link_error")}, **options}}
        missed = spec["options"].pop("missed", None)
        if missed is not None:
            spec["missed"] = missed
        self._periodic = [p for p in self._periodic if p["name"] != key] + [{"name": key, "spec": spec}]
        return key

    # --- transports ---

    @property
    def broker_url(self) -> str:
        if self._resolved_broker_url is None:
            env_broker, _ = env_urls()
            url = env_broker or self.conf.broker_url or f"sqlite:///{DEFAULT_SQLITE_FILE}"
            self._resolved_broker_url = _canonical_url(celery_urls.broker_url(url))
        return self._resolved_broker_url

    @property
    def result_backend_url(self) -> str:
        if self._resolved_backend_url is None:
            _, env_backend = env_urls()
            url = env_backend or self.conf.result_backend
            if url:
                url = celery_urls.backend_url(url)
            else:
                broker = self.broker_url
                url = broker if keeps_results(broker) else f"sqlite:///{DEFAULT_SQLITE_FILE}"
            self._resolved_backend_url = _canonical_url(url)
        return self._resolved_backend_url

    @property
    def broker(self) -> Broker:
        if self._broker is None:
            options = dict(self.conf.broker_transport_options or {})
            if isinstance(self.conf.get("broker_use_ssl"), dict):  # Celery's TLS setting
                options.update(self.conf.broker_use_ssl)
            options.setdefault("celery_wire_queues", list(self.conf.get("celery_wire_queues") or []))
            options.setdefault("queue_max_priority", self.conf.get("task_queue_max_priority"))
            # RabbitMQ quorum queues (transports/amqp/wire.py): their type and delivery limit
            options.setdefault("queue_type", self.conf.get("task_default_queue_type"))
            options.setdefault("task_queues", self.conf.get("task_queues"))
            options.setdefault("max_deliveries", self.conf.get("task_max_deliveries"))
            _add_transport_settings(options, self.broker_url, self.conf)
            self._broker = create_broker(self.broker_url, options)
        return self._broker

    @property
    def backend(self) -> ResultStore:
        if self._backend is None:
            conf = self.conf
            options = dict(conf.get("result_backend_transport_options") or {})
            if self.result_backend_url == self.broker_url:  # same server: same prefix and TLS options
                options = {**dict(conf.broker_transport_options or {}), **options}
                if isinstance(conf.get("broker_use_ssl"), dict):
                    options.update(conf.broker_use_ssl)
            if isinstance(conf.get("redis_backend_use_ssl"), dict):
                options.update(conf.redis_backend_use_ssl)
            _add_transport_settings(options, self.result_backend_url, conf)
            # Celery's result keys too, while Celery processes may read or write them.
            options.setdefault("celery_results", bool(conf.get("celery_wire_queues")))
            self._backend = create_result_store(
                self.result_backend_url, serializer=conf.result_serializer,
                accept=conf.result_accept_content or conf.accept_content,
                expires=_seconds(conf.result_expires) or None, options=options)  # 0/None: keep forever
            self._backend.app = self  # Celery's backend.app: store_result() builds metas as the worker does
            from ..history import retention
            self._backend.history_expires, self._backend.history_max = retention(conf)
        return self._backend

    @property
    def capabilities(self) -> Capabilities:
        """Which of the broker and the result store keeps worker liveness, the event stream and
        beat's schedule (celeriac.capabilities)."""
        return Capabilities(self)

    def _reset_connections(self) -> None:
        self._broker = self._backend = None
        self._resolved_broker_url = self._resolved_backend_url = None

    @property
    def events(self) -> Any:
        """`app.events.Receiver(...)`, `app.events.State()`, as in Celery's monitoring guide."""
        if self._events is None:
            from ..events import Events
            self._events = Events(self)
        return self._events

    def transaction(self, conn: Any) -> Any:
        """`with app.transaction(conn):` every task published in the block (delay, apply_async,
        send_task, canvas) is written through `conn` - a psycopg 3 connection, a Django
        connection or alias, a SQLAlchemy Session or Connection - inside its transaction:
        workers see it when that transaction commits, never if it rolls back. Needs a
        postgresql:// broker (docs/postgresql.md)."""
        from .. import transports
        transport = transports.for_url(self.broker_url)
        if transport is None or transport.transaction is None:
            needed = " or ".join(f"{t.schemes[0]}://" for t in transports.discover().values() if t.transaction)
            raise ImproperlyConfigured(
                f"app.transaction() enqueues through the application's own database connection, so it needs a "
                f"{needed} broker; this app's broker is {safe_url(self.broker_url)}. Use delay_on_commit() (Django) "
                "or publish after your commit instead")
        return transport.load("transaction")(self, conn)

    def connection(self) -> Any:
        """Celery's `with app.connection() as conn:`; celeriac's receivers use the app's broker,
        so the connection is only a context to pass along."""
        import contextlib
        return contextlib.nullcontext(self.broker)

    @property
    def control(self) -> "Control":
        if self._control is None:
            from ..control import Control
            self._control = Control(self)
        return self._control

    def close(self) -> None:
        for conn in (self._broker, self._backend):
            if conn is not None:
                conn.close()
        self._broker = self._backend = None

    # --- tasks ---

    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> AsyncTask[P, R]: ...
    @overload
    def task(self, fn: Callable[P, R]) -> BaseTask[P, R]: ...
    @overload
    def task(self, *, bind: Literal[True], **options: Any) -> _BoundTaskDecorator: ...
    @overload
    def task(self, *, bind: Literal[False] = ..., **options: Any) -> _TaskDecorator: ...

    def task(self, fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Make a task of a function: `@app.task` or `@app.task(bind=True, max_retries=3, ...)`."""
        if fn is not None and callable(fn) and not options:
            return self._create_task(fn, {})

        def decorate(f: Callable[..., Any]) -> BaseTask[Any, Any]:
            return self._create_task(f, dict(options))

        return decorate

    def gen_task_name(self, name: str, module: str) -> str:
        if module == "__main__" and self.main:
            module = self.main
        return f"{module}.{name}"

    def _create_task(self, fn: Callable[..., Any], options: dict[str, Any]) -> BaseTask[Any, Any]:
        name = options.pop("name", None) or self.gen_task_name(fn.__name__, fn.__module__)
        existing = self.tasks.get(name)
        if existing is not None and getattr(existing, "__wrapped__", None) is fn:
            return existing
        base = options.pop("base", None) or self.Task
        bind = bool(options.pop("bind", False))
        shared = options.pop("shared", True)
        del shared
        check_task_options(name, options)
        pydantic = {key: options.pop(key) for key in PYDANTIC_OPTIONS if key in options}
        if pydantic.get("pydantic"):
            run = pydantic_task_function(fn, name, self, strict=bool(pydantic.get("pydantic_strict")),
                                         context=pydantic.get("pydantic_context"),
                                         dump_kwargs=pydantic.get("pydantic_dump_kwargs"))
        else:
            run = fn
        bases: tuple[type, ...] = (base,)
        if _is_coroutine_function(fn) and not issubclass(base, AsyncTask):
            bases = (AsyncTask,) if base is BaseTask else (base, AsyncTask)
        for key in ("unique_key", "lock"):  # a function of (args, kwargs), not a method
            if callable(options.get(key)):
                options[key] = staticmethod(options[key])
        for key in ("autoretry_for", "dont_autoretry_for"):
            if key in options and not isinstance(options[key], tuple):
                options[key] = tuple(options[key])
        attrs = {
            "name": name, "app": self, "run": run if bind else staticmethod(run), "__wrapped__": fn,
            "__doc__": fn.__doc__, "__module__": fn.__module__, "_bound": bind, **options,
        }
        task: BaseTask[Any, Any] = type(fn.__name__, bases, attrs)()
        self.tasks[name] = task
        return task

    def register_task(self, task: BaseTask[Any, Any]) -> BaseTask[Any, Any]:
        """Register a class-based task instance (a Task subclass with `run`)."""
        if not task.name:
            task.name = self.gen_task_name(type(task).__name__, type(task).__module__)
        task.app = self
        self.tasks[task.name] = task
        return task

    def AsyncResult(self, task_id: str, **kwargs: Any) -> ResultHandle[Any]:  # noqa: N802
        return AsyncResult(task_id, app=self, **kwargs)

    # --- results ---

    def result_meta(self, task_id: str, status: str, result: Any, *, traceback: str | None = None,
                    request: Context | None = None, task: BaseTask[Any, Any] | None = None,
                    hostname: str | None = None) -> dict[str, Any]:
        if isinstance(result, BaseException):
            result = protocol.exception_to_dict(result)
        meta: dict[str, Any] = {
            "task_id": task_id, "status": status, "result": result, "traceback": traceback,
            "children": list(getattr(request, "children", None) or []),
            "date_done": datetime.now(UTC).isoformat()
            if status in states.READY_STATES else None,
            "name": task.name if task else (request.task if request else None),
            "retries": request.retries if request else 0,
            "parent_id": request.parent_id if request else None,
            "root_id": request.root_id if request else None,
            "worker": hostname or (request.hostname if request else None),
        }
        if self.conf.get("result_extended") and request is not None:
            meta["args"], meta["kwargs"] = list(request.args), request.kwargs
            meta["queue"] = request.delivery_info.get("routing_key")
            if getattr(request, "stamps", None):  # as in Celery: each stamp under its own name
                meta.update({"stamped_headers": request.stamped_headers, **(request.stamps or {})})
            if status == states.STARTED and request.date_started is None:
                request.date_started = datetime.now(UTC).isoformat()
            meta["date_started"] = request.date_started
        return meta

    def store_state(self, task_id: str, state: str, result: Any, *, request: Context | None = None,
                    task: BaseTask[Any, Any] | None = None, traceback: str | None = None) -> None:
        meta = self.result_meta(task_id, state, result, request=request, task=task, traceback=traceback)
        try:
            record = self.backend.encode(meta)
        except EncodeError as exc:
            raise EncodeError(f"cannot store state {state} of task {task_id}: {exc}") from exc
        self.backend.store([record])

    def __repr__(self) -> str:
        return f"<Celeriac {self.main}:{id(self):#x}>"


Celery = Celeriac


def shared_task(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """A task for reusable apps: registered on every app, sent through the current one."""
    def decorate(f: Callable[..., Any]) -> Any:
        _shared_tasks.append((f, dict(options)))
        for app in _all_apps:
            app._create_task(f, dict(options))
        name = options.get("name")
        return _SharedTask(f, name)

    return decorate(fn) if fn is not None and callable(fn) else decorate


class _SharedTask:
    """Resolves to the task of that name on whatever app is current when used."""

    def __init__(self, fn: Callable[..., Any], name: str | None) -> None:
        self._fn = fn
        self._name = name
        self.__wrapped__ = fn
        self.__doc__ = fn.__doc__

    def _task(self) -> BaseTask[Any, Any]:
        app = current_app()
        name = self._name or app.gen_task_name(self._fn.__name__, self._fn.__module__)
        if name not in app.tasks:
            app._create_task(self._fn, {"name": name})
        return app.tasks[name]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._task()(*args, **kwargs)

    def __getattr__(self, item: str) -> Any:
        return getattr(self._task(), item)


def _load_transport(url: Any, what: str) -> None:
    """Import the client library of the transport a broker (`what` "broker") or result store
    ("results") URL names, without connecting: redis-py alone takes ~0.1 s to import, which
    the process's first `delay()` would otherwise pay (a web app's first request, say); set
    with the URL, it is paid where the app is configured. A URL no transport serves, or a
    missing extra, is reported by the first use, as it would be without this."""
    from .. import transports

    if not url or not isinstance(url, str):
        return
    try:
        transport = transports.for_url((celery_urls.broker_url if what == "broker" else celery_urls.backend_url)(url))
        if transport is not None and getattr(transport, what) is not None:
            transport.load(what)
    except Exception:  # noqa: BLE001 - reported where the transport is first used
        logger.debug("the transport of %s was not loaded in advance", safe_url(url), exc_info=True)


def _django_installed_apps() -> list[str]:
    from ..contrib.django import installed_apps
    return installed_apps()


def _is_coroutine_function(fn: Any) -> bool:
    while fn is not None:
        if inspect.iscoroutinefunction(fn):
            return True
        fn = getattr(fn, "__wrapped__", None)
    return False


def _canonical_url(url: str) -> str:
    """The URL as the app keeps it: its transport may settle it (SQLite: an absolute file path)."""
    from .. import transports
    transport = transports.for_url(url)
    if transport is None or transport.canonical_url is None:
        return url  # an unknown scheme is reported when its broker or store is made
    result: str = transport.load("canonical_url")(url)
    return result


def _add_transport_settings(options: dict[str, Any], url: str, conf: Any) -> None:
    """The app settings the URL's transport reads from its options (PostgreSQL: postgres_schema),
    unless its transport options set them already."""
    from .. import transports
    transport = transports.for_url(url)
    for key in transport.settings if transport is not None else ():
        options.setdefault(key, conf.get(key))


