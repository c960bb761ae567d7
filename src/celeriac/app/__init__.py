"""Celeriac: configuration, the task registry, routing and sending tasks."""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import logging
import os
import socket
import threading
import time
from datetime import datetime, timedelta, UTC
from typing import (TYPE_CHECKING, Any, Callable, Coroutine, Iterable, Literal, ParamSpec, Protocol,
                    Sequence, TypeVar, overload)

from .. import celery_urls, protocol, signals, states
from ..brokers import Broker, Outgoing, create_broker, safe_url
from ..backends import ResultStore, create_result_store
from ..capabilities import Capabilities, keeps_results
from ..config import DEFAULT_SQLITE_FILE, Settings, env_urls
from .._options import check_call_options, check_task_options
from ..unique import UNIQUE_HEADER, unique_hold
from .._pydantic import PYDANTIC_OPTIONS, pydantic_task_function
from ..exceptions import EncodeError, ImproperlyConfigured, NotRegistered, OperationalError
from ..result import AsyncResult
from ..result import AsyncResult as ResultHandle
from ..task import AsyncTask, Context, current_task_and_request
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


class Celeriac:
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

    def _send_sent_events(self, messages: Sequence[Outgoing]) -> None:
        if self._sent_events is None:
            from ..events import EventDispatcher
            self._sent_events = EventDispatcher(self, f"{socket.gethostname()}:{os.getpid()}")
        for m in messages:
            try:
                h = protocol.unpack(m.payload).headers
            except Exception:  # noqa: BLE001 - never fail a publish that succeeded over an event
                continue
            self._sent_events.send("task-sent", uuid=h.get("id"), name=h.get("task"), args=h.get("argsrepr"),
                                   kwargs=h.get("kwargsrepr"), retries=h.get("retries", 0), eta=h.get("eta"),
                                   expires=h.get("expires"), queue=m.queue, exchange="", routing_key=m.queue,
                                   root_id=h.get("root_id"), parent_id=h.get("parent_id"))

    def _announce_published(self, messages: Sequence[Outgoing]) -> None:
        """after_task_publish for messages published in bulk (canvas, retries, what a worker
        sends on); callers check `signals.after_task_publish.receivers` first."""
        for m in messages:
            try:
                msg = protocol.unpack(m.payload)
            except Exception:  # noqa: BLE001 - never fail a publish that succeeded over a signal
                continue
            signals.after_task_publish.send(sender=msg.headers.get("task"), body=msg.body, headers=msg.headers,
                                            routing_key=m.queue, exchange="")

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

    # --- routing and sending ---

    def route_for(self, name: str, args: Any, kwargs: Any, options: dict[str, Any],
                  task: BaseTask[Any, Any] | None = None) -> dict[str, Any]:
        routes = self.conf.task_routes
        if not routes:
            return {}
        for router in routes if isinstance(routes, (list, tuple)) else [routes]:
            if callable(router):
                found = router(name, args, kwargs, options, task=task)
            else:  # the exact name wins over patterns, as in Celery
                found = router.get(name) or next((value for pattern, value in router.items()
                                                  if fnmatch.fnmatchcase(name, pattern)), None)
            if found:
                return {"queue": found} if isinstance(found, str) else dict(found)
        return {}

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> ResultHandle[Any]:
        """Send a task by name; the code need not be importable here. Options: see prepare_task."""
        hold = unique_hold(name, options.get("_task") or self.tasks.get(name), args, kwargs, options)
        if hold is not None:
            options["headers"] = {**(options.get("headers") or {}), UNIQUE_HEADER: hold[0]}
        outgoing, msg = self.prepare_task(name, args, kwargs, **options)
        if hold is not None:
            holder = self.backend.claim_unique(hold[0], msg.task_id, hold[1])
            if holder != msg.task_id:  # the same call is queued, scheduled or running: that one answers
                return AsyncResult(holder, app=self, task_name=name)
        try:
            self.publish([outgoing], what=f"task {name}[{msg.task_id}]")
        except OperationalError:
            if hold is not None:  # never sent: the next call may send it
                self.backend.release_unique([(hold[0], msg.task_id)])
            raise
        if signals.after_task_publish.receivers:
            signals.after_task_publish.send(sender=name, body=msg.body, headers=msg.headers,
                                            routing_key=outgoing.queue, exchange="")
        result: AsyncResult[Any] = AsyncResult(msg.task_id, app=self, task_name=name)
        result.ignored = bool(msg.headers.get("ignore_result"))  # as Celery: get() returns None at once
        return result

    async def asend_task(self, name: str, args: Any = None, kwargs: Any = None,
                         **options: Any) -> ResultHandle[Any]:
        """`send_task()` for asyncio code: never blocks the event loop (docs/asyncio.md)."""
        from ..aio import client
        return await client.call(self, lambda: self.send_task(name, args, kwargs, **options))

    def prepare_task(self, name: str, args: Any = None, kwargs: Any = None, *, task_id: str | None = None,
                     countdown: float | None = None, eta: Any = None,
                     expires: float | datetime | None = None, priority: int | None = None,
                     queue: str | None = None, link: Any = None, link_error: Any = None,
                     headers: dict[str, Any] | None = None, ignore_result: bool | None = None,
                     serializer: str | None = None, retries: int = 0, root_id: str | None = None,
                     parent_id: str | None = None, group_id: str | None = None, group_index: int | None = None,
                     soft_time_limit: float | None = None, time_limit: float | None = None,
                     shadow: str | None = None, chain: Any = None, chord: Any = None,
                     _task: BaseTask[Any, Any] | None = None, stamped_headers: Any = None,
                     **options: Any) -> tuple[Outgoing, protocol.TaskMessage]:
        """Encode one task call as a broker message, without sending it (groups send many at once)."""
        if stamped_headers:  # canvas stamping: the stamps are options named in stamped_headers
            from ..canvas.stamping import message_headers
            headers = {**(headers or {}), **message_headers(stamped_headers, options)}
        task = _task if _task is not None else self.tasks.get(name)
        task_id = task_id or protocol.new_id()
        argsrepr = kwargsrepr = None
        if options:
            check_call_options(name, options)
            argsrepr, kwargsrepr = options.pop("argsrepr", None), options.pop("kwargsrepr", None)
        current = current_task_and_request()
        if current is not None and not current[1].called_directly and current[1].id != task_id:
            # Started from inside a running task: tie it into that task's tree.
            if parent_id is None:
                parent_id = current[1].id
                if options.pop("add_to_parent", True):
                    current[1].children.append([[task_id, None], None])  # Celery's result tuple
            root_id = root_id or current[1].root_id or current[1].id
        conf = self.conf._data  # read directly: a dozen settings per call
        route = self.route_for(name, args, kwargs, options, task) if conf["task_routes"] else {}
        # As in Celery: apply_async(queue=) beats the task's own queue, which beats task_routes.
        queue = queue or (task.queue if task else None) or route.get("queue") or conf["task_default_queue"]
        if priority is None:
            priority = _first(task.priority if task else None, route.get("priority"), conf["task_default_priority"])
        eta_epoch = expires_iso = None
        if expires is None and task is not None:
            expires = task.expires
        if countdown is not None or eta is not None or expires is not None:
            eta_epoch, expires_iso = _timing(countdown, eta, expires)
        if ignore_result is None:
            ignore_result = bool(task.ignore_result if task and task.ignore_result is not None
                                 else conf["task_ignore_result"])
        timelimit = (time_limit if time_limit is not None or task is None else task.time_limit,  # (hard, soft)
                     soft_time_limit if soft_time_limit is not None or task is None else task.soft_time_limit)
        msg = protocol.build_task_message(
            task_id, name, args, kwargs,
            serializer=serializer or (task.serializer if task and task.serializer else None)
            or conf["task_serializer"],
            eta=protocol.to_iso(datetime.fromtimestamp(eta_epoch, UTC)) if eta_epoch else None,
            expires=expires_iso, retries=retries, root_id=root_id or task_id, parent_id=parent_id,
            group_id=group_id, group_index=group_index, origin=_ORIGIN, timelimit=timelimit,
            ignore_result=ignore_result, callbacks=_encode_sigs(link), errbacks=_encode_sigs(link_error),
            chain=chain or None, chord=dict(chord) if chord else None, priority=int(priority), queue=queue,
            extra_headers=headers, shadow=shadow)
        if argsrepr is not None or kwargsrepr is not None:  # what logs and monitors show instead (secrets)
            msg.headers.update({k: v for k, v in (("argsrepr", argsrepr), ("kwargsrepr", kwargsrepr))
                                if v is not None})
        if signals.before_task_publish.receivers:
            signals.before_task_publish.send(sender=name, body=msg.body, headers=msg.headers,
                                             properties=msg.properties, routing_key=queue, exchange="",
                                             declare=[], retry_policy=conf["task_publish_retry_policy"])
        return Outgoing(queue, protocol.pack(msg), int(priority), eta_epoch, msg), msg

    def publish(self, messages: Sequence[Outgoing], what: str = "messages", *, sent_events: bool = True) -> None:
        """Publish with the publish retry policy; a clear OperationalError when the broker is gone.
        With `task_send_sent_event`, a task-sent event per message (unless `sent_events` is False)."""
        from ..aio.capture import current as capture
        box = capture()
        if box is not None:  # an asyncio call (aapply_async): it publishes these on its own client
            box.add(messages, what, sent_events)
            return
        try:
            (self._broker if self._broker is not None else self.broker).publish(messages)
        except OperationalError as exc:  # the retry policy is read only when it is needed
            self._publish_again(messages, what, exc)
        if sent_events and self.conf._data["task_send_sent_event"]:
            self._send_sent_events(messages)

    def _publish_again(self, messages: Sequence[Outgoing], what: str, first: OperationalError) -> None:
        """The attempts after a failed first one, with the pauses of task_publish_retry_policy."""
        pauses = self.publish_retry_pauses()
        exc = first
        for attempt in range(len(pauses) + 1):
            if attempt == len(pauses):
                raise self.publish_failed(what, len(pauses) + 1, exc) from exc
            time.sleep(pauses[attempt])
            try:
                self.broker.publish(messages)
                return
            except OperationalError as again:
                exc = again

    def publish_retry_pauses(self) -> list[float]:
        """Seconds to wait before each retry of a failed publish (task_publish_retry_policy)."""
        conf = self.conf
        policy = conf.task_publish_retry_policy or {}
        if not conf.task_publish_retry:
            return []
        pauses, interval = [], float(policy.get("interval_start", 0))
        for _ in range(int(policy.get("max_retries", 3))):
            pauses.append(interval)
            interval = min(interval + float(policy.get("interval_step", 0.2)), float(policy.get("interval_max", 0.2)))
        return pauses

    def publish_failed(self, what: str, attempts: int, exc: BaseException) -> OperationalError:
        return OperationalError(f"could not publish {what} to {safe_url(self.broker_url)} "
                                f"after {attempts} attempt(s): {exc}")

    def send_retry(self, task: BaseTask[Any, Any], request: Context, retry: Any) -> None:
        """Publish the next attempt of a task that called `self.retry()`."""
        messages = [self.retry_message(task, request, retry)]
        self.publish(messages, what=f"retry of {task.name}[{request.id}]")
        if signals.after_task_publish.receivers:
            self._announce_published(messages)

    def retry_message(self, task: BaseTask[Any, Any], request: Context, retry: Any) -> Outgoing:
        opts = dict(getattr(retry, "retry_options", {}) or {})
        args, kwargs = opts.pop("args", request.args), opts.pop("kwargs", request.kwargs)
        countdown, eta = opts.pop("countdown", None), opts.pop("eta", None)
        now = time.time()
        eta_epoch = now + float(countdown) if countdown is not None else (
            _to_datetime(eta).timestamp() if eta is not None else None)
        queue = opts.pop("queue", None) or request.delivery_info.get("routing_key") or self.conf.task_default_queue
        priority = _first(opts.pop("priority", None), request.delivery_info.get("priority"), 0)
        msg = protocol.build_task_message(
            str(request.id), task.name, args, kwargs,
            serializer=task.serializer or self.conf.task_serializer,
            eta=protocol.to_iso(datetime.fromtimestamp(eta_epoch, UTC)) if eta_epoch else None,
            expires=request.expires, retries=request.retries + 1, root_id=request.root_id,
            parent_id=request.parent_id, group_id=request.group, group_index=request.group_index,
            origin=_origin(), timelimit=tuple(request.timelimit or (None, None)),  # type: ignore[arg-type]
            ignore_result=request.ignore_result, callbacks=request.callbacks, errbacks=request.errbacks,
            chain=request.chain, chord=request.chord, priority=int(priority), queue=queue,
            extra_headers=request.headers)
        if signals.before_task_publish.receivers:  # a retry is a publish too (tracing, user hooks)
            signals.before_task_publish.send(sender=task.name, body=msg.body, headers=msg.headers,
                                             properties=msg.properties, routing_key=queue, exchange="",
                                             declare=[], retry_policy=self.conf.task_publish_retry_policy)
        return Outgoing(queue, protocol.pack(msg), int(priority), eta_epoch)

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


def _django_installed_apps() -> list[str]:
    from ..contrib.django import installed_apps
    return installed_apps()


def _is_coroutine_function(fn: Any) -> bool:
    while fn is not None:
        if inspect.iscoroutinefunction(fn):
            return True
        fn = getattr(fn, "__wrapped__", None)
    return False


def _timing(countdown: float | None, eta: Any, expires: Any) -> tuple[float | None, str | None]:
    """(eta as epoch seconds, expires as ISO text) of a call, from its countdown/eta/expires."""
    now = time.time()
    eta_epoch = None
    if countdown is not None:
        eta_epoch = now + float(countdown)
    elif eta is not None:
        eta_epoch = _to_datetime(eta).timestamp()
    expires_iso = None
    if expires is not None:
        expires_at = now + float(_seconds(expires) or 0) if isinstance(expires, (int, float, timedelta)) \
            else _to_datetime(expires).timestamp()
        expires_iso = protocol.to_iso(datetime.fromtimestamp(expires_at, UTC))
    return eta_epoch, expires_iso


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def _to_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.astimezone()
    if isinstance(value, str):
        parsed = protocol.from_iso(value)
        assert parsed is not None
        return parsed
    raise TypeError(f"expected a datetime, got {type(value).__name__}")


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


_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"


def _origin() -> str:
    return _ORIGIN


def _encode_sigs(value: Any) -> Any:
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    return [dict(item) if hasattr(item, "keys") else item for item in items]
