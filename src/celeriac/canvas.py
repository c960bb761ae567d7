"""Signatures and workflows: chain, group, chord, chunks, map and starmap.

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

import itertools
import uuid
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Self, TypeVar, cast

from .brokers import Outgoing

if TYPE_CHECKING:
    from .app import Celeriac
    from .result import GroupResult, ResultBase
    from .task import Task

S = TypeVar("S", bound="Signature")

# Options that name a result's place in a workflow: they go to the tail of a nested signature.
TAIL_OPTIONS = ("task_id", "group_id", "group_index", "chord", "link")
# Accepted by apply_async but meaningful only to the first message sent.
_TIMING_OPTIONS = ("countdown", "eta")


def _app_or_current(app: "Celeriac | None") -> "Celeriac":
    if app is not None:
        return app
    from .app import current_app
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

    # --- the fields ---

    @property
    def name(self) -> str:
        return str(self["task"])

    task = name

    @property
    def args(self) -> tuple[Any, ...]:
        return tuple(self["args"])

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self["kwargs"])

    @property
    def options(self) -> dict[str, Any]:
        return self["options"]  # type: ignore[no-any-return]

    @property
    def subtask_type(self) -> str | None:
        return self.get("subtask_type")

    @property
    def immutable(self) -> bool:
        return bool(self.get("immutable"))

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

    def __or__(self, other: Any) -> "Signature":
        if isinstance(other, Signature):
            return chain(self, other, app=self._app or other._app)
        return NotImplemented

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
        from .aio import client
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
        from .task import current_task_and_request
        current = current_task_and_request()
        running = current[1] if current is not None and not current[1].called_directly else None
        known_children = len(running.children) if running is not None else 0
        messages = sig.messages(app, tuple(args or ()), dict(kwargs or {}), {**options, **timing})
        if running is not None and type(sig) is not Signature:
            # Started from a running task: the workflow is one child (a group as a GroupResult,
            # a chain as its first step), not one child per message.
            from .result import child_entry
            del running.children[known_children:]
            root = _root_of(result)
            running.children.append(child_entry(root))
            if isinstance(sig, chord) and result is not root:
                # A chord's body is sent later by the worker that finishes the header, from no
                # task of the caller's: it is this task's child too, or collect() never reaches it.
                running.children.append(child_entry(_first_after(result, root)))
        app.publish(messages, what=f"{sig.describe()}")
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
        from .result import AsyncResult
        if _id is not None:
            self.options["task_id"] = _id
        task_id = self.options.setdefault("task_id", str(uuid.uuid4()))
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
        task_id = opts.pop("task_id", None) or str(uuid.uuid4())
        self.options.setdefault("task_id", task_id)
        continuation = opts.pop("chain", None) or None
        if continuation is not None:
            continuation = [dict(s) for s in continuation]
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
    if isinstance(value, dict):
        return {k: _copy_structure(v) if k in ("options", "kwargs", "link", "link_error", "tasks", "header",
                                                "body", "chain", "chord", "task") or isinstance(v, Signature)
                else v for k, v in value.items()}
    if isinstance(value, (list, tuple)) and value and any(isinstance(v, dict) for v in value):
        return type(value)(_copy_structure(v) for v in value)
    return value


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


def _accumulate(app: "Celeriac | None") -> Signature:
    return Signature("celery.accumulate", kwargs={"index": 0}, app=app)


def _single_result(sig: Signature) -> Signature:
    """A group where one result is needed becomes chord(group, accumulate): its result is the list."""
    if isinstance(sig, chunks):
        sig = sig._as_group()
    if isinstance(sig, group):
        return chord(sig, _accumulate(sig._app), app=sig._app)
    return sig


class _TaskList(Signature):
    """Chains and groups: signatures whose parts are a list in kwargs["tasks"]."""

    def _from_json(self, d: dict[str, Any], app: "Celeriac | None") -> None:
        Signature.__init__(self, d, app=app)
        self["kwargs"]["tasks"] = _sigs(self["kwargs"].get("tasks", ()), app)

    @property
    def tasks(self) -> list[Signature]:
        found = self["kwargs"]["tasks"]
        if any(not isinstance(s, Signature) for s in found):
            found[:] = _sigs(found, self._app)
        return found  # type: ignore[no-any-return]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)


@Signature.register_type
class chain(_TaskList):  # noqa: N801 - Celery's name
    """Tasks run one after another, each result passed to the next (``a.s() | b.s()``)."""

    subtask_type_name = "chain"

    def __init__(self, *tasks: Any, app: "Celeriac | None" = None, **options: Any) -> None:
        if len(tasks) == 1 and isinstance(tasks[0], dict) and tasks[0].get("subtask_type") == "chain":
            self._from_json(tasks[0], app)
            return
        steps: list[Signature] = []
        for step in _sigs(_unwrap_tasks(tasks), app):
            if type(step) is chain and not step.options:  # chain(chain(a, b), c) == chain(a, b, c)
                steps.extend(step.tasks)
            else:
                steps.append(step)
        app = app or next((s._app for s in steps if s._app is not None), None)
        super().__init__("celery.chain", (), {"tasks": steps}, options, subtask_type="chain", app=app)

    def __or__(self, other: Any) -> Signature:
        if isinstance(other, chain) and not other.options:
            return chain(*self.tasks, *other.tasks, app=self._app, **self.options)
        if isinstance(other, Signature):
            return chain(*self.tasks, other, app=self._app, **self.options)
        return NotImplemented

    def _steps(self) -> list[Signature]:
        """The steps to run; a group followed by anything becomes a chord (Celery's upgrade)."""
        tasks = self.tasks
        out: list[Signature] = []
        i = 0
        while i < len(tasks):
            step = tasks[i]
            if isinstance(step, chunks):
                step = step._as_group()
            if isinstance(step, group) and i + 1 < len(tasks):
                out.append(chord(step, tasks[i + 1], app=self._app))
                i += 2
                continue
            out.append(step)
            i += 1
        if not out:
            raise ValueError("a chain needs at least one task")
        tasks[:] = out
        return tasks

    def freeze(self, _id: str | None = None, group_id: str | None = None, chord: Any = None,
               root_id: str | None = None, parent_id: str | None = None,
               group_index: int | None = None) -> "ResultBase":
        steps = self._steps()
        results = [s.freeze() for s in steps[:-1]]
        results.append(steps[-1].freeze(_id))
        for previous, result in itertools.pairwise(results):
            _root_of(result).parent = previous
        return results[-1]

    def _with_tail(self, options: dict[str, Any]) -> Signature:
        copy = self.clone()
        steps = copy._steps()
        tail, rest = split_tail(options)
        steps[-1] = steps[-1]._with_tail(tail)
        copy["options"] = merge_options(copy.options, rest)
        return copy

    def result_ids(self) -> list[str]:
        return [i for s in self.tasks for i in s.result_ids()]

    def tail(self) -> Signature:
        return self.tasks[-1].tail() if self.tasks else self

    def messages(self, app: "Celeriac", args: tuple[Any, ...], kwargs: dict[str, Any],
                 options: dict[str, Any]) -> list[Outgoing]:
        opts = merge_options(self.options, options)
        continuation = list(opts.pop("chain", None) or [])
        timing = {k: opts.pop(k) for k in _TIMING_OPTIONS if k in opts}
        tail = {k: opts.pop(k) for k in TAIL_OPTIONS if k in opts}
        errbacks = _as_list(opts.pop("link_error", None))
        steps = self._steps()
        if tail:
            steps[-1] = steps[-1]._with_tail(tail)
        first_only = {k: opts.pop(k) for k in ("parent_id",) if k in opts}
        for step in steps:  # every step reports failure to the chain's errbacks
            for key, value in opts.items():
                step.options.setdefault(key, value)
            if errbacks:
                step.options["link_error"] = _as_list(step.options.get("link_error")) + errbacks
            step.freeze()
        rest = continuation + [dict(s) for s in reversed(steps[1:])]
        return steps[0].messages(app, args, kwargs, {**timing, **first_only, **({"chain": rest} if rest else {})})

    def describe(self) -> str:
        return f"chain of {len(self.tasks)}"

    def __repr__(self) -> str:
        return " | ".join(repr(s) for s in self.tasks) or "chain()"

    def apply(self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        result: Any = None
        values: tuple[Any, ...] = tuple(args or ())
        errbacks = _as_list(self.options.get("link_error")) + _as_list(options.pop("link_error", None))
        for i, step in enumerate(self._steps()):
            if errbacks:
                step = step.clone(link_error=errbacks)
            result = step.apply(values, kwargs if i == 0 else None, **options)
            if not result.successful():
                return result
            values = (result.get(),)
        return result


_chain = chain


@Signature.register_type
class group(_TaskList):  # noqa: N801 - Celery's name
    """Tasks run in parallel; the result is a GroupResult with their results in order."""

    subtask_type_name = "group"

    def __init__(self, *tasks: Any, app: "Celeriac | None" = None, **options: Any) -> None:
        if len(tasks) == 1 and isinstance(tasks[0], dict) and tasks[0].get("subtask_type") == "group":
            self._from_json(tasks[0], app)
            return
        members = _sigs(_unwrap_tasks(tasks), app)
        if len(members) == 1 and type(members[0]) is group:  # group(group(...)) is that group
            members = members[0].tasks
        app = app or next((s._app for s in members if s._app is not None), None)
        super().__init__("celery.group", (), {"tasks": members}, options, subtask_type="group", app=app)

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Any:
        return iter(self.tasks)

    def _with_tail(self, options: dict[str, Any]) -> Signature:
        if any(options.get(k) is not None for k in ("chord", "group_id", "group_index")):
            # A member of a chord or group has one result: the group's list, via accumulate.
            return _single_result(self)._with_tail(options)
        return super()._with_tail(options)

    def _members(self) -> list[Signature]:
        members = self.tasks
        members[:] = [_single_result(m) for m in members]
        return members

    @property
    def id(self) -> str | None:
        return self.options.get("task_id")

    def freeze(self, _id: str | None = None, group_id: str | None = None, chord: Any = None,
               root_id: str | None = None, parent_id: str | None = None,
               group_index: int | None = None) -> "GroupResult":
        from .result import GroupResult
        if _id is not None:
            self.options["task_id"] = _id
        group_id = self.options.setdefault("task_id", str(uuid.uuid4()))
        return GroupResult(group_id, [m.freeze() for m in self._members()], app=self.app)

    def result_ids(self) -> list[str]:
        return [i for s in self.tasks for i in s.result_ids()]

    def messages(self, app: "Celeriac", args: tuple[Any, ...], kwargs: dict[str, Any],
                 options: dict[str, Any]) -> list[Outgoing]:
        opts = merge_options(self.options, options)
        continuation = list(opts.pop("chain", None) or [])
        if continuation:  # something runs after the group: that makes it a chord
            body = Signature.from_dict(continuation[-1], app=self._app)
            as_chord = chord(self, body, app=self._app)
            as_chord.freeze()
            rest = continuation[:-1]
            return as_chord.messages(app, args, kwargs, {**{k: v for k, v in options.items() if k != "chain"},
                                                         **({"chain": rest} if rest else {})})
        group_id = opts.pop("task_id", None) or self.options.setdefault("task_id", str(uuid.uuid4()))
        for key in ("group_id", "group_index", "chord"):
            opts.pop(key, None)
        out: list[Outgoing] = []
        for index, member in enumerate(self._members()):
            if type(member) is Signature:  # the common case, without a copy per member (big groups)
                out.extend(member.messages(app, args, kwargs, {**opts, "group_id": group_id, "group_index": index}))
                continue
            member.freeze()
            placed = member._with_tail({"group_id": group_id, "group_index": index})
            out.extend(placed.messages(app, args, kwargs, dict(opts)))
        return out

    def describe(self) -> str:
        return f"group {self.id} of {len(self.tasks)}"

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(s) for s in self.tasks)}])"

    def apply(self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any) -> "GroupResult":
        from .result import GroupResult
        group_id = self.options.get("task_id") or str(uuid.uuid4())
        errbacks = _as_list(self.options.get("link_error")) + _as_list(options.pop("link_error", None))
        members = [m.clone(link_error=errbacks) if errbacks else m for m in self._members()]
        return GroupResult(group_id, [m.apply(args, kwargs, **options) for m in members], app=self.app)


@Signature.register_type
class chord(Signature):  # noqa: N801 - Celery's name
    """A group (the header) and a callback (the body) that gets the list of their results."""

    subtask_type_name = "chord"

    def __init__(self, header: Any = None, body: Any = None, app: "Celeriac | None" = None,
                 **options: Any) -> None:
        if isinstance(header, dict) and header.get("subtask_type") == "chord" and body is None:
            super().__init__(header, app=app)
            kw = self["kwargs"]
            kw["header"] = group(kw.get("header") or [], app=app) if not isinstance(kw.get("header"), group) \
                else kw["header"]
            if kw.get("body") is not None and not isinstance(kw["body"], Signature):
                kw["body"] = Signature.from_dict(kw["body"], app=app)
            return
        header_group = header if isinstance(header, group) else group(
            *(_sigs(header, app) if header is not None else []), app=app)
        body_sig = None if body is None else (body if isinstance(body, Signature)
                                             else Signature.from_dict(body, app=app))
        app = app or header_group._app or (body_sig._app if body_sig else None)
        super().__init__("celery.chord", (), {"header": header_group, "body": body_sig}, options,
                         subtask_type="chord", app=app)

    @property
    def tasks(self) -> list[Signature]:
        return self.header.tasks

    @property
    def header(self) -> group:
        return self["kwargs"]["header"]  # type: ignore[no-any-return]

    @property
    def body(self) -> Signature:
        body = self["kwargs"].get("body")
        if body is None:
            raise ValueError("this chord has no body yet: call it with one, chord(header)(body)")
        return body  # type: ignore[no-any-return]

    @property
    def id(self) -> str | None:
        body = self["kwargs"].get("body")
        return body.id if body is not None else None

    def __call__(self, body: Any = None, **options: Any) -> Any:
        """`chord(header)(body)` sends the chord with that body."""
        sig = self if body is None else chord(self.header, body, app=self._app, **self.options)
        return sig.apply_async(**options)

    def freeze(self, _id: str | None = None, group_id: str | None = None, chord: Any = None,
               root_id: str | None = None, parent_id: str | None = None,
               group_index: int | None = None) -> "ResultBase":
        header_result = self.header.freeze()
        body_result = self.body.freeze(_id)
        _root_of(body_result).parent = header_result
        return body_result

    def _with_tail(self, options: dict[str, Any]) -> Signature:
        copy = self.clone()
        tail, rest = split_tail(options)
        copy["kwargs"]["body"] = copy.body._with_tail(tail)
        copy["options"] = merge_options(copy.options, rest)
        return copy

    def result_ids(self) -> list[str]:
        return self.header.result_ids() + self.body.result_ids()

    def tail(self) -> Signature:
        return self.body.tail()

    def messages(self, app: "Celeriac", args: tuple[Any, ...], kwargs: dict[str, Any],
                 options: dict[str, Any]) -> list[Outgoing]:
        opts = merge_options(self.options, options)
        continuation = opts.pop("chain", None)
        tail = {k: opts.pop(k) for k in TAIL_OPTIONS if k in opts}
        errbacks = _as_list(opts.pop("link_error", None))
        body = self.body._with_tail(tail)
        if errbacks:
            body.options["link_error"] = _as_list(body.options.get("link_error")) + errbacks
        if continuation:
            body.options["chain"] = list(continuation)
        body.freeze()
        self["kwargs"]["body"] = body
        header = self.header
        group_id = header.options.setdefault("task_id", str(uuid.uuid4()))
        members = header._members()
        if not members:  # nothing to wait for: the body runs now, with no results
            return body.messages(app, ([],), {}, {k: v for k, v in opts.items() if k in _TIMING_OPTIONS})
        body_dict = dict(body)
        body_dict["chord_size"] = len(members)
        out: list[Outgoing] = []
        for index, member in enumerate(members):
            placement = {"group_id": group_id, "group_index": index, "chord": body_dict}
            if type(member) is Signature:  # the common case, without a copy per member (big chords)
                out.extend(member.messages(app, args, kwargs, {**opts, **placement}))
                continue
            member.freeze()
            placed = member._with_tail(placement)
            out.extend(placed.messages(app, args, kwargs, dict(opts)))
        return out

    def describe(self) -> str:
        return f"chord {self.header.id} of {len(self.header.tasks)}"

    def __repr__(self) -> str:
        body = self["kwargs"].get("body")
        return f"chord({self.header!r}, {body!r})"

    def apply(self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        from .exceptions import ChordError
        header_result = self.header.apply(args, kwargs, **options)
        failed = next((r for r in header_result.results if not r.successful()), None)
        if failed is not None:
            error = ChordError(f"Dependency {failed.id} raised {getattr(failed, 'result', None)!r}")
            body_id = str(self.body.clone().freeze().id)  # as in the worker: the body's id carries the failure
            for errback in _as_list(self.body.options.get("link_error")) + _as_list(self.options.get("link_error")):
                run_errback(self.app, signature(errback, app=self.app), body_id, error, None, publish=None)
            raise error
        return self.body.apply((header_result.get(),))


_Group = group


@Signature.register_type
class chunks(Signature):  # noqa: N801 - Celery's name
    """Split many calls of one task into `n`-sized parts, each part one message (a group)."""

    subtask_type_name = "chunks"

    def __init__(self, task: Any = None, it: Iterable[Any] = (), n: int = 1, app: "Celeriac | None" = None,
                 **options: Any) -> None:
        if isinstance(task, dict) and task.get("subtask_type") == "chunks":
            super().__init__(task, app=app)
            return
        sig = task if isinstance(task, Signature) else signature(task, app=app)
        if int(n) < 1:
            raise ValueError("chunks(): n must be at least 1")
        super().__init__("celery.chunks", (), {"task": sig, "it": [tuple(a) for a in it], "n": int(n)},
                         options, subtask_type="chunks", app=app or sig._app)

    def group(self) -> _Group:
        """The group of `celery.starmap` tasks this runs as."""
        kw = self["kwargs"]
        task = signature(kw["task"], app=self._app)
        items, n = [tuple(a) for a in kw["it"]], int(kw["n"])
        parts = [Signature("celery.starmap", kwargs={"task": dict(task), "it": items[i:i + n]}, app=self._app,
                           **{k: v for k, v in task.options.items() if k not in TAIL_OPTIONS})
                 for i in range(0, len(items), n)]
        return _Group(parts, app=self._app, **self.options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def clone(self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any) -> Self:
        copy = super().clone(args, kwargs, **options)
        frozen = getattr(self, "_group", None)
        if frozen is not None and not args and not kwargs and not options:
            copy._group = frozen.clone()  # keep the ids freeze() handed out
        return copy

    def _as_group(self) -> _Group:
        # One group per chunks object, so that freeze() and messages() agree on the ids.
        found: _Group | None = getattr(self, "_group", None)
        if found is None:
            found = self._group = self.group()
        return found

    def freeze(self, *args: Any, **kwargs: Any) -> "ResultBase":
        return self._as_group().freeze(*args, **kwargs)

    def apply(self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        return self.group().apply(args, kwargs, **options)

    def messages(self, app: "Celeriac", args: tuple[Any, ...], kwargs: dict[str, Any],
                 options: dict[str, Any]) -> list[Outgoing]:
        return self._as_group().messages(app, args, kwargs, options)

    def _with_tail(self, options: dict[str, Any]) -> Signature:
        return self._as_group()._with_tail(options)

    def result_ids(self) -> list[str]:
        return self._as_group().result_ids()


def xmap(task: Any, it: Iterable[Any], app: "Celeriac | None" = None) -> Signature:
    """One message that calls `task` on each item in turn: `add.map([(1,), ...])`."""
    sig = signature(task, app=app)
    return Signature("celery.map", kwargs={"task": dict(sig), "it": list(it)}, app=app or sig._app)


def xstarmap(task: Any, it: Iterable[Any], app: "Celeriac | None" = None) -> Signature:
    """One message that calls `task(*item)` for each item: `add.starmap([(1, 2), ...])`."""
    sig = signature(task, app=app)
    return Signature("celery.starmap", kwargs={"task": dict(sig), "it": [list(a) for a in it]},
                     app=app or sig._app)


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


def run_errback(app: "Celeriac", errback: Signature, task_id: str, exc: BaseException | None,
                traceback: str | None, publish: Any, request: Any = None) -> None:
    """Call an error callback the way Celery does.

    A task taking (request, exc, traceback) runs right here, in this process (the exception
    object cannot travel); any other errback is sent with the failed task's id.
    """
    import inspect
    import logging

    task = app.tasks.get(errback.name)
    new_style = False
    if task is not None:
        try:
            params = [p for p in inspect.signature(task.run).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
            new_style = len(params) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params) and len(params) > 1
        except (TypeError, ValueError):
            new_style = False
    if new_style and task is not None:
        from .task import Context
        ctx = request if request is not None else Context(id=task_id, called_directly=False)
        try:
            task.apply((ctx, exc, traceback, *errback.args), errback.kwargs, throw=True)
        except Exception:
            logging.getLogger("celeriac.worker").exception(
                "error callback %s for task %s raised", errback.name, task_id)
        return
    if publish is None:
        errback.apply_async((task_id,)) if not app.conf.task_always_eager else errback.apply((task_id,))
    else:
        publish(errback.messages(app, (task_id,), {}, {}))


def _rebuild(d: dict[str, Any]) -> Signature:
    return Signature.from_dict(d)


def replacement_messages(app: "Celeriac", sig: Any, request: Any) -> list[Outgoing]:
    """The messages that put `sig` in the place of the running task (`Task.replace`).

    The replacement's tail takes over the task's id, its group/chord membership and its
    callbacks; the rest of the task's chain runs after the replacement.
    """
    new = _single_result(signature(sig, app=app))
    new = new._with_tail({"task_id": request.id, "group_id": request.group, "group_index": request.group_index,
                          "chord": request.chord, "link": request.callbacks})
    if request.errbacks:
        new.options["link_error"] = _as_list(new.options.get("link_error")) + list(request.errbacks)
    new.freeze()
    options: dict[str, Any] = {"parent_id": request.parent_id, "root_id": request.root_id}
    if request.chain:
        options["chain"] = list(request.chain)
    return new.messages(app, (), {}, options)
