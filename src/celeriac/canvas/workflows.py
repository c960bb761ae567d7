"""The workflows: chain, group, chord, chunks, map and starmap (all of them signatures)."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Iterable, Self, cast

from .. import protocol
from ..brokers import Outgoing
from .bulk import gc_paused, members_messages
from .lazy import LazyHeader, is_lazy, send_lazy_chord
from .signature import (_TIMING_OPTIONS, TAIL_OPTIONS, Signature, _as_list, _root_of, _sigs, _unwrap_tasks,
                        merge_options, signature, split_tail)

if TYPE_CHECKING:
    from ..app import Celeriac
    from ..result import GroupResult, ResultBase


def _accumulate(app: "Celeriac | None") -> Signature:
    return Signature("celery.accumulate", kwargs={"index": 0}, app=app)


def _single_result(sig: Signature) -> Signature:
    """A group where one result is needed becomes chord(group, accumulate): its result is the list."""
    if isinstance(sig, chunks):
        sig = sig._as_group()
    if isinstance(sig, group):
        return chord(sig, _accumulate(sig._app), app=sig._app)
    return sig


def _is_nested_group(sig: Signature) -> bool:
    """A group inside a group, as `_single_result` made it: chord(group, accumulate)."""
    body = sig["kwargs"].get("body") if isinstance(sig, chord) else None
    return isinstance(body, Signature) and body.name == "celery.accumulate"


def _member_result(member: Signature, frozen: Any) -> Any:
    """Celery's shape: a group inside a group is a GroupResult of its tasks (its chord's
    header), not the accumulate task that carries its list to an enclosing chord."""
    if _is_nested_group(member):
        return frozen.__dict__.get("_parent") or frozen
    return frozen


class _TaskList(Signature):
    """Chains and groups: signatures whose parts are a list in kwargs["tasks"]."""

    def _from_json(self, d: dict[str, Any], app: "Celeriac | None") -> None:
        Signature.__init__(self, d, app=app)
        self["kwargs"]["tasks"] = _sigs(self["kwargs"].get("tasks", ()), app)

    @property
    def tasks(self) -> list[Signature]:
        found = self["kwargs"]["tasks"]
        if not all(map(isinstance, found, itertools.repeat(Signature))):  # a C loop: big groups ask often
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

    def stamp(self, visitor: Any = None, append_stamps: bool = False, **headers: Any) -> None:
        """Stamp every step (see Signature.stamp); the visitor's on_chain_start/end frame them."""
        from .stamping import stamp_chain
        stamp_chain(self, visitor, append_stamps, headers)

    def _steps(self) -> list[Signature]:
        """The steps to run; a group followed by anything becomes a chord (Celery's upgrade)."""
        tasks = [_unrolled(t) for t in self.tasks]
        if len(tasks) > 1:  # an empty group between other steps is no step at all (as in Celery)
            tasks = [t for t in tasks if not (type(t) is group and not t.tasks)] or tasks[:1]
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
        self.tasks[:] = out
        return self.tasks

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


def _unrolled(step: Signature) -> Signature:
    """A group of one task in a chain is that task (Celery 5's group unrolling): the next step
    gets its value, not a list of one value."""
    if type(step) is not group or len(step.tasks) != 1:
        return step
    options = {k: v for k, v in step.options.items() if k != "task_id"}
    member = step.tasks[0]
    return member.clone(**options) if options else member


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

    def link(self, callback: "Signature | dict[str, Any]") -> Signature:
        """Celery's semantics: the callback is linked to the group's *first* task, as an immutable
        copy (that task cannot pass its siblings' results on). It runs once, when that task succeeds,
        not when the whole group is done: use a chord for that."""
        tasks = self.tasks
        if not tasks:
            raise ValueError("group.link(): the group is empty, so no task can run the callback; "
                             "use a chord to run something after a group")
        copy = signature(callback, app=self._app).clone()
        copy.set(immutable=True)
        tasks[0].link(copy)
        return copy

    def link_error(self, errback: "Signature | dict[str, Any]") -> tuple[Signature, ...]:  # type: ignore[override]
        """Celery's semantics: a copy of the errback goes to every task of the group, so it is
        called once per failing member (make it idempotent). Returns those copies."""
        original = signature(errback, app=self._app)
        copies = tuple(original.clone() for _ in self.tasks)
        for member, copy in zip(self.tasks, copies, strict=True):
            member.link_error(copy)
        return copies

    def set_immutable(self, immutable: bool) -> None:
        """As in Celery: every member ignores (or takes) the partial arguments it is sent with."""
        for member in self.tasks:
            member.set_immutable(immutable)

    def skew(self, start: float = 1.0, stop: float | None = None, step: float = 1.0) -> "group":
        """Spread the members' start: countdown `start`, `start + step`, ... (up to `stop`, then
        `stop` again for the rest), as Celery's group.skew."""
        countdown = start
        for member in self.tasks:
            member.set(countdown=countdown)
            if stop is None or countdown + step <= stop:
                countdown += step
        return self

    def stamp(self, visitor: Any = None, append_stamps: bool = False, **headers: Any) -> None:
        """Stamp every member (see Signature.stamp); the visitor's on_group_start/end frame them."""
        from .stamping import stamp_group
        stamp_group(self, visitor, append_stamps, headers)

    def on_error(self, errback: "Signature | dict[str, Any]") -> "group":
        self.link_error(errback)
        return self

    def apply_async(self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        # As in Celery: a group is not a task, so it has no success of its own to call back on.
        if options.get("link") is not None:
            raise TypeError("Cannot add link to group: use a chord, chord(group, callback), to run "
                            "something after every task of a group (or group.link() for its first task)")
        if options.get("link_error") is not None:
            raise TypeError("Cannot add link_error to group: do that on individual tasks, or call "
                            "group.link_error(errback), which gives every task a copy")
        with gc_paused(len(self.tasks)):
            return super().apply_async(args, kwargs, **options)

    def _with_tail(self, options: dict[str, Any]) -> Signature:
        if any(options.get(k) is not None for k in ("chord", "group_id", "group_index")):
            # A member of a chord or group has one result: the group's list, via accumulate.
            return _single_result(self)._with_tail(options)
        callbacks = _as_list(options.get("link"))
        copy = super()._with_tail({k: v for k, v in options.items() if k != "link"})
        for callback in callbacks:  # e.g. a chain ending in a group: Celery's group.link placement
            copy.link(callback)
        return copy

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
        from ..result import GroupResult
        if _id is not None:
            self.options["task_id"] = _id
        group_id = self.options.setdefault("task_id", protocol.new_id())
        members = self._members()
        unset = [m for m in members if type(m) is Signature and not m["options"].get("task_id")]
        for member, task_id in zip(unset, protocol.new_ids(len(unset)), strict=True):  # ids made in one go
            member["options"]["task_id"] = task_id
        from ..result import AsyncResult
        return GroupResult(group_id, [AsyncResult(m["options"]["task_id"], app=m._app or m.app, task_name=m["task"])
                                      if type(m) is Signature else _member_result(m, m.freeze())
                                      for m in members], app=self.app)

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
        group_id = opts.pop("task_id", None) or self.options.setdefault("task_id", protocol.new_id())
        for key in ("group_id", "group_index", "chord"):
            opts.pop(key, None)
        return members_messages(app, self._members(), args, kwargs, opts, group_id)  # big groups: bulk.py

    def describe(self) -> str:
        return f"group {self.id} of {len(self.tasks)}"

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(s) for s in self.tasks)}])"

    def apply(self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any) -> "GroupResult":
        from ..result import GroupResult
        group_id = self.options.get("task_id") or protocol.new_id()
        errbacks = _as_list(self.options.get("link_error")) + _as_list(options.pop("link_error", None))
        members = [m.clone(link_error=errbacks) if errbacks else m for m in self._members()]
        return GroupResult(group_id, [cast(chord, m).header.apply(args, kwargs, **options) if _is_nested_group(m)
                                      else m.apply(args, kwargs, **options) for m in members], app=self.app)


@Signature.register_type
class chord(Signature):  # noqa: N801 - Celery's name
    """A group (the header) and a callback (the body) that gets the list of their results."""

    subtask_type_name = "chord"

    def __init__(self, header: Any = None, body: Any = None, app: "Celeriac | None" = None,
                 **options: Any) -> None:
        if isinstance(header, dict) and header.get("subtask_type") == "chord" and body is None:
            super().__init__(header, app=app)
            kw = self["kwargs"]
            if not isinstance(kw.get("header"), (group, LazyHeader)):
                kw["header"] = group(kw.get("header") or [], app=app)
            if kw.get("body") is not None and not isinstance(kw["body"], Signature):
                kw["body"] = Signature.from_dict(kw["body"], app=app)
            return
        body_sig = None if body is None else (body if isinstance(body, Signature)
                                             else Signature.from_dict(body, app=app))
        header_part: group | LazyHeader
        if is_lazy(header):  # a generator: read as it is sent (lazy.py)
            header_part = LazyHeader(header)
            app = app or (body_sig._app if body_sig else None)
        else:
            header_part = header if isinstance(header, group) else group(
                *(_sigs(header, app) if header is not None else []), app=app)
            app = app or header_part._app or (body_sig._app if body_sig else None)
        super().__init__("celery.chord", (), {"header": header_part, "body": body_sig}, options,
                         subtask_type="chord", app=app)

    def items(self) -> Any:
        # json.dumps and pickling read a dict subclass through items(): a generator header is
        # read to its end first, so that the JSON has every member.
        if self.is_lazy:
            self.header  # noqa: B018 - materializes it
        return super().items()

    @property
    def is_lazy(self) -> bool:
        """The header is a generator that has not been read to its end (see lazy.py)."""
        return isinstance(self["kwargs"].get("header"), LazyHeader)

    @property
    def tasks(self) -> list[Signature]:
        return self.header.tasks

    @property
    def header(self) -> group:
        """The header group (a generator header is read to its end here)."""
        found = self["kwargs"]["header"]
        if isinstance(found, LazyHeader):
            found = self["kwargs"]["header"] = group(found.all(), app=self._app, **found.options)
        return found  # type: ignore[no-any-return]

    def apply_async(self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        if self.is_lazy and not self.app.conf.task_always_eager and self["kwargs"].get("body") is not None:
            return send_lazy_chord(self, args, kwargs, options)
        with gc_paused(len(self.tasks)):
            return super().apply_async(args, kwargs, **options)

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

    def link(self, callback: "Signature | dict[str, Any]") -> "Signature | dict[str, Any]":
        """As in Celery: the callback is linked to the body, so it runs once, with the body's result."""
        return self.body.link(callback)

    def link_error(self, errback: "Signature | dict[str, Any]") -> "Signature | dict[str, Any]":
        """As in Celery: linked to the body, which fails (with ChordError) when a header task fails,
        so it is called once; with `task_allow_error_cb_on_chord_header`, every header task gets it too."""
        if self.app.conf.get("task_allow_error_cb_on_chord_header"):
            for member in self.header.tasks:
                member.link_error(signature(errback, app=self._app).clone())
        return self.body.link_error(errback)

    def stamp(self, visitor: Any = None, append_stamps: bool = False, **headers: Any) -> None:
        """Stamp the header tasks and the body (see Signature.stamp)."""
        from .stamping import stamp_chord
        stamp_chord(self, visitor, append_stamps, headers)

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
        group_id = header.options.setdefault("task_id", protocol.new_id())
        members = header._members()
        if not members:  # nothing to wait for: the body runs now, with no results
            return body.messages(app, ([],), {}, {k: v for k, v in opts.items() if k in _TIMING_OPTIONS})
        body_dict = dict(body)
        body_dict["chord_size"] = len(members)
        return members_messages(app, members, args, kwargs, opts, group_id, chord=body_dict)

    def describe(self) -> str:
        return f"chord {self.header.id} of {len(self.header.tasks)}"

    def __repr__(self) -> str:
        body = self["kwargs"].get("body")
        return f"chord({self.header!r}, {body!r})"

    def apply(self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        from ..exceptions import ChordError
        from .callbacks import run_errback
        header_result = self.header.apply(args, kwargs, **options)
        failed = next((r for r in header_result.results if not r.successful()), None)
        if failed is not None:
            error = ChordError(f"Dependency {failed.id} raised {getattr(failed, 'result', None)!r}")
            body_id = str(self.body.clone().freeze().id)  # as in the worker: the body's id carries the failure
            for errback in _as_list(self.body.options.get("link_error")) + _as_list(self.options.get("link_error")):
                run_errback(self.app, signature(errback, app=self.app), body_id, error, None, publish=None)
            failed.maybe_throw()  # as in Celery: the failed header task's own exception
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

    def stamp(self, visitor: Any = None, append_stamps: bool = False, **headers: Any) -> None:
        self._as_group().stamp(visitor, append_stamps, **headers)

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


