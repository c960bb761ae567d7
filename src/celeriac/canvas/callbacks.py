"""Error callbacks, Task.replace and Task.add_to_chord: what runs after, in place of, or beside a task."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..brokers import Outgoing
from .signature import Signature, _as_list, signature
from .workflows import _single_result

if TYPE_CHECKING:
    from ..app import Celeriac


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
        from ..task import Context
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
        # A child of the failed task, as in Celery (and so in its trace, with tracing on).
        publish(errback.messages(app, (task_id,), {}, {"parent_id": task_id,
                                                        "root_id": getattr(request, "root_id", None)}))



def replacement_signature(app: "Celeriac", sig: Any, request: Any) -> Signature:
    """`sig` placed where the running task is (`Task.replace`): the replacement's tail takes
    over the task's id, its group/chord membership and its callbacks and errbacks (so that
    `Task.on_replace` sees, and can stamp, all of them)."""
    new = _single_result(signature(sig, app=app))
    new = new._with_tail({"task_id": request.id, "group_id": request.group, "group_index": request.group_index,
                          "chord": request.chord, "link": request.callbacks})
    if request.errbacks:
        new.options["link_error"] = _as_list(new.options.get("link_error")) + list(request.errbacks)
    new.freeze()
    return new


def placed_replacement_messages(app: "Celeriac", placed: Signature, request: Any) -> list[Outgoing]:
    """The messages of a replacement from `replacement_signature`; the rest of the task's
    chain runs after it."""
    options: dict[str, Any] = {"parent_id": request.parent_id, "root_id": request.root_id}
    if request.chain:
        options["chain"] = list(request.chain)
    return placed.messages(app, (), {}, options)


def replacement_messages(app: "Celeriac", sig: Any, request: Any) -> list[Outgoing]:
    """The messages that put `sig` in the place of the running task (`Task.replace`)."""
    return placed_replacement_messages(app, replacement_signature(app, sig, request), request)


# Members added to a running chord take header indexes from here on, after every header member
# (their results come after the header's, in the order they were added).
ADDED_INDEX_BASE = 1 << 30


def add_to_chord(task: Any, sig: Any, lazy: bool) -> Any:
    """Task.add_to_chord: the chord's count in the result store grows first, so the chord cannot
    complete before the new member does."""
    request = task.request
    if not request.chord or request.group is None or request.called_directly:
        raise ValueError(f"task {task.name}[{request.id}] is not a member of any chord: add_to_chord() is "
                         "for a task running in a chord's header")
    added = task.app.backend.chord_extend(str(request.group), 1)
    placement = {"group_id": request.group, "group_index": ADDED_INDEX_BASE + added, "chord": request.chord}
    new = signature(sig, app=task.app) if not isinstance(sig, Signature) else sig
    if type(new) is Signature:
        new.set(**placement)  # in place, as Celery does: the caller's signature is the one to send
    else:
        new = _single_result(new)._with_tail(placement)
    new.freeze()
    return new if lazy else new.delay()
