"""The messages of a big group or chord header, built without per-member overhead.

A member that is a plain call of a task (`add.s(i, i)`, no options of its own beyond its id
and its place in the group) differs from its siblings only in its id, its arguments and its
index. So the first member of a run of such siblings goes through `app.prepare_task` like any
call (routing, options, the task's defaults, the protocol's headers), and the others are
made from its message: the same headers with their own id, index and argument reprs, their
own body, ids made in one go. Any member that is more than that (options of its own, a
workflow, stamps) takes the ordinary path, as does everything when a `before_task_publish`
receiver is connected (it may change each message's headers, so each is built on its own),
when the body is not JSON, or when the group is sent from inside a running task (each
message is then a child of that task, as a lone call would be).

The messages are the same as those the ordinary path makes, byte for byte apart from the ids
(tests/unit/test_bulk_messages.py compares them).
"""

from __future__ import annotations

import contextlib
import gc
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from .. import protocol, signals
from ..brokers import Outgoing
from ..task import current_task_and_request
from .signature import Signature, merge_options

if TYPE_CHECKING:
    from ..app import Celeriac

# A member with only these options is "plain": its message can be made from a sibling's.
_PLACEMENT = frozenset({"task_id", "group_id", "group_index", "chord"})


# From this many members on, the garbage collector waits until the group is sent.
GC_PAUSE_FROM = 256


@contextlib.contextmanager
def gc_paused(members: int) -> Iterator[None]:
    """Hold off the cyclic garbage collector while a big group is built and sent: its tens of
    thousands of new dicts and strings would set it off again and again, each time walking
    all of them (a quarter of the time of a 10,000-member group), and none of them is
    garbage yet. Reference counting still frees everything as usual; the collector runs
    again right after (if it was on: another thread's pause or the user's choice is kept)."""
    if members < GC_PAUSE_FROM or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _plain(app: "Celeriac", member: Signature) -> bool:
    # A unique task's member claims its key one by one (celeriac.unique.member_headers).
    return (type(member) is Signature and member["options"].keys() <= _PLACEMENT
            and getattr(app.tasks.get(member["task"]), "unique_for", None) is None)


def members_messages(app: "Celeriac", members: Sequence[Signature], args: tuple[Any, ...],
                     kwargs: dict[str, Any], opts: dict[str, Any], group_id: str,
                     chord: dict[str, Any] | None = None) -> list[Outgoing]:
    """The messages of a group's (or chord header's) members, in order: member i sent with
    `opts`, group_id, group_index=i and, for a chord's header, `chord` (the body)."""
    bulk = ("chain" not in opts and not signals.before_task_publish.receivers
            and not _in_running_task())
    if bulk:  # ids for the plain members that have none yet, made in one go
        unset = [m for m in members if _plain(app, m) and not m["options"].get("task_id")]
        for member, task_id in zip(unset, protocol.new_ids(len(unset)), strict=True):
            member["options"]["task_id"] = task_id
    out: list[Outgoing] = []
    index = 0
    while index < len(members):
        member = members[index]
        placement: dict[str, Any] = {"group_id": group_id, "group_index": index}
        if chord is not None:
            placement["chord"] = chord
        if not (bulk and _plain(app, member)):
            if type(member) is Signature:  # without a copy per member
                out.extend(member.messages(app, args, kwargs, {**opts, **placement}))
            else:
                member.freeze()
                out.extend(member._with_tail(placement).messages(app, args, kwargs, dict(opts)))
            index += 1
            continue
        end = _run_end(app, members, index, chord)
        out.extend(_run_messages(app, members[index:end], index, args, kwargs, {**opts, **placement}))
        index = end
    return out


def _in_running_task() -> bool:
    current = current_task_and_request()
    return current is not None and not current[1].called_directly


def _run_end(app: "Celeriac", members: Sequence[Signature], start: int, chord: dict[str, Any] | None) -> int:
    """Where the run of plain members of one task (and one chord) that begins at `start` ends."""
    head = members[start]
    name, head_chord = head["task"], head["options"].get("chord")
    end = start + 1
    while end < len(members):
        m = members[end]
        if not _plain(app, m) or m["task"] != name or (chord is None and m["options"].get("chord") is not head_chord):
            break
        end += 1
    return end


def _run_messages(app: "Celeriac", run: Sequence[Signature], first_index: int, args: tuple[Any, ...],
                  kwargs: dict[str, Any], options: dict[str, Any]) -> list[Outgoing]:
    """The first member's message as prepare_task makes it; the others from it."""
    calls = [(m["options"]["task_id"], _call_args(m, args, kwargs)) for m in run]
    name = run[0]["task"]
    opts = merge_options(run[0]["options"], options)
    opts.pop("task_id", None)
    first_id, (first_args, first_kwargs) = calls[0]
    outgoing, msg = app.prepare_task(name, first_args, first_kwargs, task_id=first_id, **opts)
    template = None
    if len(run) > 1 and msg.content_type == protocol.JSON:
        embed = protocol.decode_body(msg, frozenset({protocol.JSON}))[2]
        template = protocol.MessageTemplate(msg, embed, ("argsrepr" in opts, "kwargsrepr" in opts))
    out = [outgoing]
    if template is None or not template.usable:  # one by one, as a lone call would be
        out += [app.prepare_task(name, a, k, task_id=t, **{**opts, "group_index": first_index + i})[0]
                for i, (t, (a, k)) in enumerate(calls[1:], start=1)]
        return out
    queue, priority, eta, make = outgoing.queue, outgoing.priority, outgoing.eta, template.make
    for index, (task_id, (args, kwargs)) in enumerate(calls[1:], start=first_index + 1):
        built, payload = make(task_id, index, args, kwargs)
        out.append(Outgoing(queue, payload, priority, eta, built))
    return out


def _call_args(member: Signature, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A member's arguments as Signature.messages gives them (partial args first)."""
    own_args, own_kwargs = member["args"], member["kwargs"]
    if not isinstance(own_args, tuple):
        own_args = tuple(own_args)
    if member["immutable"] or (not args and not kwargs):  # nothing to add: no copies (nothing changes them)
        return own_args, own_kwargs
    return tuple(args) + own_args, {**own_kwargs, **kwargs}
