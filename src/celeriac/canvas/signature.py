"""Signature: one task call, packed up; the base of every workflow (see workflows.py).

A signature is a plain dict (so it survives JSON): ``task``, ``args``, ``kwargs``,
``options``, ``subtask_type``, ``immutable``. Workflows are signatures too; their parts
live in ``kwargs`` (``tasks`` for chain and group, ``header``/``body`` for chord).

How a workflow runs, without any task that polls:

- ``freeze()`` gives every task in the workflow its id up front, so the client holds the
  whole result tree before anything is sent.
- A chain sends its first step; the rest travels in that message (``chain``, in reverse
  order, as in Celery's protocol) and the worker that finishes a step publishes the next
  one in the same batch write as the step's result and ack.
- A group sends all its members in one publish call (one round trip per batch).
- Each chord header message carries the body; the worker that finishes a header records
  it in the result store (``chord_parts_done``), which counts distinct members atomically
  and hands the complete list - once - to the worker whose part completed it.

Options that say where a result goes (``task_id``, ``group_id``, ``group_index``,
``chord``, ``link``) belong to the *tail* of a nested workflow: the last step of a chain,
the body of a chord. ``_with_tail`` puts them there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Self, TypeVar, cast

from .. import protocol, signals, unique
from ..brokers import Outgoing
from ..result import AsyncResult

if TYPE_CHECKING:
    from ..app import Celeriac
    from ..result import ResultBase
    from ..task import Task

S = TypeVar("S", bound="Signature")

# Options that name a result's place in a workflow: they go to the tail of a nested signature.
TAIL_OPTIONS = ("task_id", "group_id", "group_index", "chord", "link")
# Accepted by apply_async but meaningful only to the first message sent.
_TIMING_OPTIONS = ("countdown", "eta")


def _app_or_current(app: "Celeriac | None") -> "Celeriac":
    if app is not None:
        return app
    from ..app import current_app
    return current_app()


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def split_tail(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the options that place a result, for the tail; the others, for the whole)."""
    return ({k: v for k, v in options.items() if k in TAIL_OPTIONS},
            {k: v for k, v in options.items() if k not in TAIL_OPTIONS})


def merge_options(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Call-time options win, except callbacks, which add up."""
    merged = {**base, **override}
    for key in ("link", "link_error"):
        if key in base and key in override:
            merged[key] = _as_list(base[key]) + [s for s in _as_list(override[key]) if s not in _as_list(base[key])]
    return merged


class Signature(dict):  # type: ignore[type-arg]
    """One task call, packed up to be sent later or passed around (``add.s(2, 2)``)."""

    TYPES: ClassVar[dict[str, type["Signature"]]] = {}
    subtask_type_name: ClassVar[str | None] = None

    def __init__(self, task: Any = None, args: Any = None, kwargs: dict[str, Any] | None = None,
                 options: dict[str, Any] | None = None, subtask_type: str | None = None,
                 immutable: bool = False, app: "Celeriac | None" = None, **ex: Any) -> None:
        self._type: Task[Any, Any] | None = None
        if isinstance(task, dict):  # signature(dict_from_json)
            d = task
            super().__init__(
                task=d.get("task"), args=tuple(d.get("args") or ()), kwargs=dict(d.get("kwargs") or {}),
                options=dict(d.get("options") or {}), subtask_type=d.get("subtask_type"),
                immutable=bool(d.get("immutable", False)))
            if d.get("chord_size") is not None:
                self["chord_size"] = d["chord_size"]
        else:
            name = getattr(task, "name", task)
            if task is not None and not isinstance(task, str):
                self._type = task
                app = app or getattr(task, "app", None)
            super().__init__(task=name, args=tuple(args or ()), kwargs=dict(kwargs or {}),
                             options={**(options or {}), **ex}, subtask_type=subtask_type,
                             immutable=immutable)
        self._app = app

    # --- building ---

    @classmethod
    def register_type(cls, klass: type[S]) -> type[S]:
        assert klass.subtask_type_name
        cls.TYPES[klass.subtask_type_name] = klass
        return klass

    @classmethod
    def from_dict(cls, d: dict[str, Any], app: "Celeriac | None" = None) -> "Signature":
        """The right signature class for a dict (a chain stays a chain after JSON)."""
        klass = cls.TYPES.get(d.get("subtask_type") or "", Signature)
        return klass(d, app=app)

    # --- the fields (settable, as in Celery: they read and write the dict itself) ---

    @property
    def name(self) -> str:
        return str(self["task"])

    @name.setter
    def name(self, value: str) -> None:
        self["task"] = value

    task = name

    @property
    def args(self) -> tuple[Any, ...]:
        return tuple(self["args"])

    @args.setter
    def args(self, value: Any) -> None:
        self["args"] = tuple(value or ())

    @property
    def kwargs(self) -> dict[str, Any]:
        """The signature's own keyword arguments (the dict itself: changing it changes the signature)."""
        return self["kwargs"]  # type: ignore[no-any-return]

    @kwargs.setter
    def kwargs(self, value: dict[str, Any] | None) -> None:
        self["kwargs"] = dict(value or {})

    @property
    def options(self) -> dict[str, Any]:
        return self["options"]  # type: ignore[no-any-return]

    @options.setter
    def options(self, value: dict[str, Any] | None) -> None:
        self["options"] = dict(value or {})

    @property
    def subtask_type(self) -> str | None:
        return self.get("subtask_type")

    @subtask_type.setter
    def subtask_type(self, value: str | None) -> None:
        self["subtask_type"] = value

    @property
    def immutable(self) -> bool:
        return bool(self.get("immutable"))

    @immutable.setter
    def immutable(self, value: bool) -> None:
        self["immutable"] = bool(value)

    @property
    def chord_size(self) -> int | None:
        return self.get("chord_size")

    @chord_size.setter
    def chord_size(self, value: int | None) -> None:
        self["chord_size"] = value

    @property
    def parent_id(self) -> str | None:
        return self.options.get("parent_id")

    @parent_id.setter
    def parent_id(self, value: str | None) -> None:
        self.options["parent_id"] = value

    @property
    def root_id(self) -> str | None:
        return self.options.get("root_id")

    @root_id.setter
    def root_id(self, value: str | None) -> None:
        self.options["root_id"] = value

    @property
    def app(self) -> "Celeriac":
        if self._app is None:
            self._app = self._type.app if self._type is not None else _app_or_current(None)
        return self._app

    @property
    def type(self) -> "Task[Any, Any]":
        if self._type is None:
            self._type = self.app.tasks[self.name]
        return self._type

    @property
    def id(self) -> str | None:
        return self.options.get("task_id")

    # --- changing ---

    def set(self, immutable: bool | None = None, **options: Any) -> "Signature":
        """Set options (queue=, countdown=, priority=, ...); returns the signature itself."""
        if immutable is not None:
            self["immutable"] = bool(immutable)
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self["immutable"] = bool(immutable)

    def clone(self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any) -> Self:
        """A copy; new args go before the signature's own (partial application), kwargs merge."""
        copy = cast(Self, type(self).from_dict(_copy_structure(self), app=self._app))
        copy._type = self._type
        if args and not copy.immutable:
            copy["args"] = tuple(args) + copy.args
        if kwargs and not copy.immutable:
            copy["kwargs"] = {**copy.kwargs, **kwargs}
        if options:
            copy["options"] = merge_options(copy.options, options)
        return copy

    def replace(self, args: Any = None, kwargs: dict[str, Any] | None = None,
                options: dict[str, Any] | None = None) -> "Signature":
        """A copy with args, kwargs or options replaced (not merged)."""
        copy = self.clone()
        if args is not None:
            copy["args"] = tuple(args)
        if kwargs is not None:
            copy["kwargs"] = dict(kwargs)
        if options is not None:
            copy["options"] = dict(options)
        return copy

    def link(self, callback: "Signature | dict[str, Any]") -> "Signature | dict[str, Any]":
        """Run `callback` with this task's result when it succeeds; returns the callback."""
        self.options.setdefault("link", [])
        self.options["link"] = _as_list(self.options["link"]) + [callback]
        return callback

    def link_error(self, errback: "Signature | dict[str, Any]") -> "Signature | dict[str, Any]":
        """Run `errback` when this task fails; returns the errback."""
        self.options["link_error"] = _as_list(self.options.get("link_error")) + [errback]
        return errback

    def on_error(self, errback: "Signature | dict[str, Any]") -> "Signature":
        """Like link_error, but returns the signature, for `sig.on_error(handler.s()).delay()`."""
        self.link_error(errback)
        return self

    def stamp(self, visitor: Any = None, append_stamps: bool = False, **headers: Any) -> Any:
        """Stamp this signature (and its callbacks) with headers of your own, or with what a
        `StampingVisitor` decides; the running task sees them as ``request.stamps``. With
        `append_stamps`, a stamp set again keeps both values (a list); otherwise the new one wins."""
        from .stamping import stamp_signature
        return stamp_signature(self, visitor, append_stamps, headers)

    def stamp_links(self, visitor: Any = None, append_stamps: bool = False, **headers: Any) -> None:
        """Stamp only the callbacks and errbacks linked to this signature."""
        from .stamping import stamp_links
        stamp_links(self, visitor, append_stamps, headers)

    def __or__(self, other: Any) -> "Signature":
        if isinstance(other, Signature):
            from .workflows import chain
            return chain(self, other, app=self._app or other._app)
        return NotImplemented

    def __invert__(self) -> Any:
        """``~sig``: send it and wait for its result (Celery's shortcut; never inside a task)."""
        return self.apply_async().get()

    def __deepcopy__(self, memo: dict[int, Any]) -> "Signature":
        return self.clone()

    def __reduce__(self) -> tuple[Any, ...]:  # pickle the dict, not the app it is bound to
        return (_rebuild, (_plain(self),))

    # --- calling ---

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the task function here and now (workflows: send them, as Celery does)."""
        sig_args = self.args if self.immutable else args + self.args
        return self.type(*sig_args, **{**self.kwargs, **kwargs})

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """Send it; args go before the signature's own (unless immutable)."""
        return self.apply_async(args, kwargs)

    async def adelay(self, *args: Any, **kwargs: Any) -> Any:
        """`delay()` for asyncio code (docs/asyncio.md)."""
        return await self.aapply_async(args, kwargs)

    async def aapply_async(self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        """`apply_async()` for asyncio code: the same messages, published without blocking the loop."""
        from ..aio import client
        return await client.call(self.app, lambda: self.apply_async(args, kwargs, **options))

    def apply_async(self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        """Send the signature (or the whole workflow) to the workers; returns its result handle."""
        app = self.app
        if app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        sig = self.clone()
        timing = {k: options.pop(k) for k in _TIMING_OPTIONS if k in options}
        if options:
            sig = sig._with_tail({k: options.pop(k) for k in TAIL_OPTIONS if k in options})
        result = sig.freeze()
        from ..task import current_task_and_request
        current = current_task_and_request()
        running = current[1] if current is not None and not current[1].called_directly else None
        known_children = len(running.children) if running is not None else 0
        messages = sig.messages(app, tuple(args or ()), dict(kwargs or {}), {**options, **timing})
        holder = getattr(sig, "follows", None)
        if holder and type(sig) is Signature and not any(sig.options.get(k) for k in ("chain", "link", "link_error")):
            # Sent on its own, the same call already pending answers for it, as task.delay() does.
            from ..result import AsyncResult
            return AsyncResult(holder, app=app, task_name=sig.name)
        if running is not None and type(sig) is not Signature:
            # Started from a running task: the workflow is one child (a group as a GroupResult,
            # a chain as its first step), not one child per message.
            from ..result import child_entry
            del running.children[known_children:]
            root = _root_of(result)
            running.children.append(child_entry(root))
            from .workflows import chord
            if isinstance(sig, chord) and result is not root:
                # A chord's body is sent later by the worker that finishes the header, from no
                # task of the caller's: it is this task's child too, or collect() never reaches it.
                running.children.append(child_entry(_first_after(result, root)))
        app.publish(messages, what=f"{sig.describe()}")
        if signals.after_task_publish.receivers:
            app._announce_published(messages)
        return result

    def apply(self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        """Run it in this process, now (eager); returns an EagerResult."""
        sig_args = self.args if self.immutable else tuple(args or ()) + self.args
        sig_kwargs = self.kwargs if self.immutable else {**self.kwargs, **(kwargs or {})}
        opts = merge_options(self.options, options)
        links, errbacks = _as_list(opts.pop("link", None)), _as_list(opts.pop("link_error", None))
        task_id = opts.pop("task_id", None)
        throw = opts.pop("throw", None)
        result = self.type.apply(sig_args, sig_kwargs, task_id=task_id,
                                 throw=throw if throw is not None else (False if errbacks else None), **opts)
        if result.successful():
            for link in links:
                signature(link, app=self.app).apply((result.get(),))
        elif result.failed():
            from .callbacks import run_errback
            for errback in errbacks:
                run_errback(self.app, signature(errback, app=self.app), result.id, result.result,
                            result.traceback, publish=None)
            if throw or (throw is None and self.app.conf.task_eager_propagates):
                raise result.result
        return result

    # --- workflow internals (shared by clients and workers) ---

    def freeze(self, _id: str | None = None, group_id: str | None = None, chord: Any = None,
               root_id: str | None = None, parent_id: str | None = None,
               group_index: int | None = None) -> "ResultBase":
        """Assign the task id now (idempotent) and return the result handle it will have."""
        if _id is not None:
            self.options["task_id"] = _id
        task_id = self.options.get("task_id") or self.options.setdefault("task_id", protocol.new_id())
        for key, value in (("group_id", group_id), ("chord", chord), ("group_index", group_index)):
            if value is not None:
                self.options[key] = value
        return AsyncResult(task_id, app=self.app, task_name=self.name)

    def _with_tail(self, options: dict[str, Any]) -> "Signature":
        """A copy whose result-placing options (TAIL_OPTIONS) are set on its tail task."""
        copy = self.clone()
        copy["options"] = merge_options(copy.options, {k: v for k, v in options.items() if v is not None})
        return copy

    def result_ids(self) -> list[str]:
        """Every frozen task id in this signature (workflows: all their tasks)."""
        return [self.id] if self.id else []

    def tail(self) -> "Signature":
        """The task whose result is this signature's result (where chord membership sits)."""
        continuation = self.options.get("chain")  # reversed: the first one runs last
        return signature(continuation[0], app=self._app).tail() if continuation else self

    def messages(self, app: "Celeriac", args: tuple[Any, ...], kwargs: dict[str, Any],
                 options: dict[str, Any]) -> list[Outgoing]:
        """The messages that start this signature, with `args` as partial arguments."""
        sig_args = self.args if self.immutable else args + self.args
        sig_kwargs = self.kwargs if self.immutable else {**self.kwargs, **kwargs}
        opts = merge_options(self.options, options)
        task_id = opts.pop("task_id", None) or protocol.new_id()
        self.options.setdefault("task_id", task_id)
        continuation = opts.pop("chain", None) or None
        if continuation is not None:
            continuation = [dict(s) for s in continuation]
        held = unique.member_headers(app, self.name, sig_args, sig_kwargs, opts, task_id)
        self.follows = held.get(unique.FOLLOW_HEADER, [None])[0] if held else None
        if held is not None:
            opts["headers"] = {**(opts.get("headers") or {}), **held}
        outgoing, _msg = app.prepare_task(self.name, sig_args, sig_kwargs, task_id=task_id,
                                          chain=continuation, **opts)
        return [outgoing]

    def describe(self) -> str:
        return f"task {self.name}[{self.id}]"

    def __repr__(self) -> str:
        args = ", ".join([*(repr(a) for a in self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())])
        return f"{self.name}({args}){'!' if self.immutable else ''}"


def _copy_structure(value: Any) -> Any:
    """Copy dicts and lists of a signature (not the argument values themselves)."""
    if type(value) is Signature and _flat(value):  # most members of a big group: a quick copy
        return _flat_copy(value)
    if isinstance(value, dict):
        return {k: _copy_structure(v) if k in ("options", "kwargs", "link", "link_error", "tasks", "header",
                                                "body", "chain", "chord", "task") or isinstance(v, Signature)
                else v for k, v in value.items()}
    if isinstance(value, (list, tuple)) and value and any(isinstance(v, dict) for v in value):
        return type(value)(_copy_structure(v) for v in value)
    return value


_CONTAINERS = (dict, list, tuple)


def _flat(sig: Signature) -> bool:
    """No dicts, lists or tuples among its options and kwargs: copying those two dicts copies it."""
    for v in sig["options"].values():
        if isinstance(v, _CONTAINERS):
            return False
    for v in sig["kwargs"].values():
        if isinstance(v, _CONTAINERS):
            return False
    return True


def _flat_copy(sig: Signature) -> Signature:
    """What `Signature.from_dict(_copy_structure(sig))` makes of a flat signature, without
    building it up again."""
    copy = Signature.__new__(Signature)
    dict.update(copy, sig)
    copy["kwargs"], copy["options"] = dict(sig["kwargs"]), dict(sig["options"])
    copy._type, copy._app = sig._type, sig._app
    return copy


def _plain(value: Any) -> Any:
    """The JSON-shaped dict of a signature (nested signatures included)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def signature(varies: Any, *args: Any, app: "Celeriac | None" = None, **kwargs: Any) -> Signature:
    """A signature from a task name, a task, or a dict (e.g. one that went through JSON)."""
    if isinstance(varies, dict):
        if isinstance(varies, Signature) and app is None:
            return varies.clone()
        return Signature.from_dict(varies, app=app)
    if isinstance(varies, str):
        return Signature(varies, *args, app=app, **kwargs)  # type: ignore[misc]
    if hasattr(varies, "s") and hasattr(varies, "name"):
        return Signature(varies, *args, **kwargs)
    raise TypeError(f"cannot make a signature of {type(varies).__name__}: give a task name, task or dict")


subtask = signature
maybe_signature = signature


def _sigs(items: Iterable[Any], app: "Celeriac | None") -> list[Signature]:
    out = []
    for item in items:
        sig = item if isinstance(item, Signature) else Signature.from_dict(item, app=app)
        if sig._app is None and app is not None:  # parts of a workflow use the workflow's app
            sig._app = app
        out.append(sig)
    return out


def _unwrap_tasks(tasks: tuple[Any, ...]) -> list[Any]:
    if len(tasks) == 1 and not isinstance(tasks[0], dict) and isinstance(tasks[0], Iterable):
        return list(tasks[0])
    return list(tasks)




def _first_after(result: Any, ancestor: Any) -> Any:
    """The result right after `ancestor` on the in-memory parent links from `result` up."""
    while (parent := result.__dict__.get("_parent", result.__dict__.get("parent"))) is not None \
            and parent is not ancestor:
        result = parent
    return result


def _root_of(result: Any) -> Any:
    """The first result of a (frozen) workflow: where its parent link belongs."""
    seen = 0
    while seen < 10_000:
        # The in-memory link only (not AsyncResult.parent, which would read the result store).
        parent = result.__dict__.get("_parent", result.__dict__.get("parent"))
        if parent is None:
            return result
        result = parent
        seen += 1
    return result



def _rebuild(d: dict[str, Any]) -> Signature:
    return Signature.from_dict(d)

