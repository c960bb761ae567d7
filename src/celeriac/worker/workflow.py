"""What a worker does after a task, for workflows: callbacks, the next chain step, chords.

Everything here produces messages and results for the consumer's Batch, so they are
written together with the task's own result and ack (one transaction on SQLite).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from .. import protocol, signals, states
from ..backends import StoredResult
from ..backends.base import ChordPart, FiredChord
from ..canvas import Signature, chain, chord, run_errback, signature
from ..exceptions import ChordError, EncodeError
from ..result import child_entry
from ..task import Context

if TYPE_CHECKING:
    from ..app import Celeriac
    from ..brokers import Outgoing

logger = logging.getLogger("celeriac.worker")

# Marks the messages that start a chord body, so that a duplicate copy is recognised.
CHORD_BODY_HEADER = "celeriac_chord"

# (task id, state, exception or value, traceback, task name) -> a result to store
StoreFn = Callable[[str, str, Any, "str | None", "str | None"], None]


def encode_outcome(app: "Celeriac", task_id: str, status: str, result: Any, *, name: str | None = None,
                   request: Context | None = None, traceback: str | None = None,
                   hostname: str | None = None) -> StoredResult:
    """The stored form of an outcome; a value that cannot be encoded is stored as that failure."""
    meta = app.result_meta(task_id, status, result, traceback=traceback, request=request, hostname=hostname)
    if name and not meta.get("name"):
        meta["name"] = name
    try:
        return app.backend.encode(meta)
    except EncodeError as exc:
        logger.error("task %s[%s]: result cannot be serialized: %s", meta.get("name"), task_id, exc)
        if signals.task_internal_error.receivers:
            signals.task_internal_error.send(
                sender=app.tasks.get(str(meta.get("name"))), task_id=task_id, request=request, exception=exc,
                args=getattr(request, "args", None), kwargs=getattr(request, "kwargs", None),
                traceback=exc.__traceback__, einfo=None)
        meta.update(status=states.FAILURE, result=protocol.exception_to_dict(exc), traceback=None)
        return app.backend.encode(meta)


def in_workflow(request: Context) -> bool:
    return bool(request.callbacks or request.errbacks or request.chain or request.chord or request.replaced_by)


def after_success(app: "Celeriac", request: Context, retval: Any, publishes: list["Outgoing"],
                  store: StoreFn, parts: list[ChordPart]) -> None:
    """Queue the callbacks and the next chain step, with `retval` as their first argument."""
    ids = {"parent_id": request.id, "root_id": request.root_id or request.id}
    try:
        out: list[Outgoing] = []
        children: list[Any] = []
        for callback in request.callbacks or []:
            sig = signature(callback, app=app)
            children.append(child_entry(sig.freeze()))
            out.extend(sig.messages(app, (retval,), {}, dict(ids)))
        if request.chain:
            rest = list(request.chain)
            step = signature(rest.pop(), app=app)
            children.append(child_entry(step.freeze()))
            out.extend(step.messages(app, (retval,), {}, {**ids, **({"chain": rest} if rest else {})}))
    except Exception as exc:  # e.g. a return value JSON cannot carry to the next step
        logger.error("task %s[%s] succeeded but what follows it cannot be sent (%s); the rest of the "
                     "workflow is marked FAILURE", request.task, request.id, exc)
        mark_downstream(app, [signature(step, app=app) for step in request.chain or []], request.root_id,
                        states.FAILURE, exc, None, store, parts)
        return
    publishes.extend(out)
    request.children.extend(children)


def after_failure(app: "Celeriac", request: Context, state: str, exc: BaseException, traceback: str | None,
                  publishes: list["Outgoing"], store: StoreFn, parts: list[ChordPart]) -> None:
    """Run the error callbacks; the rest of the chain never runs, and its results say why."""
    for errback in request.errbacks or []:
        run_errback(app, signature(errback, app=app), str(request.id), exc, traceback,
                    publish=publishes.extend, request=request)
    mark_downstream(app, [signature(step, app=app) for step in request.chain or []], request.root_id,
                    state, exc, traceback, store, parts)


def mark_downstream(app: "Celeriac", steps: list[Signature], root_id: str | None, state: str,
                    exc: BaseException, traceback: str | None, store: StoreFn, parts: list[ChordPart]) -> None:
    """Steps that will never run get the failure as their result, so that waiting on the last
    result raises instead of hanging; and if the last of them was a member of a chord, the
    chord is told that member failed (or it would wait for it forever)."""
    for step in steps:
        for task_id in step.result_ids():
            store(task_id, state, exc, traceback, None)
    if steps:  # chain continuations are in reverse order: the first one is the chain's tail
        part = _failed_membership(app, steps[0].tail(), root_id, state, exc, traceback)
        if part is not None:
            parts.append(part)


def _failed_membership(app: "Celeriac", tail: Signature, root_id: str | None, state: str, exc: BaseException,
                       traceback: str | None) -> ChordPart | None:
    options = tail.options
    body, group_id, index = options.get("chord"), options.get("group_id"), options.get("group_index")
    if not body or group_id is None or index is None:
        return None
    task_id = str(options.get("task_id") or "")
    record = encode_outcome(app, task_id, state, exc, name=tail.name, traceback=traceback)
    return ChordPart(str(group_id), int(index), int(dict(body).get("chord_size") or 0), task_id, state,
                     record.data, dict(body), root_id)


def chord_part(app: "Celeriac", request: Context, record: StoredResult | None, status: str,
               result: Any, traceback: str | None, hostname: str) -> ChordPart | None:
    """The chord membership of a finished header task, or None if it is not in a chord."""
    if not request.chord or request.group is None or request.group_index is None:
        return None
    if record is None:  # its result is not stored (ignore_result), but the chord needs it
        record = encode_outcome(app, str(request.id), status, result, request=request, traceback=traceback,
                                hostname=hostname)
    body = dict(request.chord)
    return ChordPart(str(request.group), int(request.group_index), int(body.get("chord_size") or 0),
                     str(request.id), status, record.data, body, request.root_id)


def _errbacks_of(sig: Signature) -> list[Any]:
    found = list(sig.options.get("link_error") or [])
    if isinstance(sig, chain) and sig.tasks:
        found += [e for e in _errbacks_of(sig.tasks[0]) if e not in found]
    elif isinstance(sig, chord):
        found += [e for e in _errbacks_of(sig.body) if e not in found]
    return found


def fire_chord(app: "Celeriac", fired: FiredChord, publishes: list["Outgoing"], store: StoreFn,
               parts: list[ChordPart]) -> None:
    """Start the body of a complete chord, or fail it if a header failed."""
    part = fired.part
    body_dict = {k: v for k, v in part.body.items() if k != "chord_size"}
    body = signature(body_dict, app=app)
    root_id = part.root_id
    failed = next((m for m in fired.metas if m.get("status") != states.SUCCESS), None)
    if failed is None and len(fired.metas) >= part.size:
        values = [m.get("result") for m in fired.metas]
        try:
            publishes.extend(body.messages(app, (values,), {}, {
                "parent_id": part.task_id, "root_id": root_id,
                "headers": {**(body.options.get("headers") or {}), CHORD_BODY_HEADER: part.group_id}}))
            return
        except Exception as exc:
            error: BaseException = ChordError(f"chord {part.group_id}: the body cannot be sent: {exc}")
    elif failed is None:
        # Told again, but incomplete with no failure: this header failed and fired the chord
        # before, then ran again (redelivered) and succeeded. The chord's failure stands.
        logger.info("chord %s: header %s re-ran after the chord had failed; nothing more to do",
                    part.group_id, part.task_id)
        return
    else:
        cause = failed.get("result")
        cause_text = repr(protocol.exception_from_dict(cause)) if isinstance(cause, dict) else repr(cause)
        error = ChordError(f"Dependency {failed.get('task_id')} raised {cause_text}")
    _fail_chord(app, part, body, error, publishes, store, parts)


def _fail_chord(app: "Celeriac", part: ChordPart, body: Signature, error: BaseException,
                publishes: list["Outgoing"], store: StoreFn, parts: list[ChordPart]) -> None:
    """The body never runs: its result (and what follows it) and its error callbacks say why."""
    root_id = part.root_id
    logger.error("chord %s failed: %s; its body %s does not run", part.group_id, error, body.name)
    continuation = [signature(step, app=app) for step in body.options.get("chain") or []]
    ids = body.result_ids() + [i for step in continuation for i in step.result_ids()]
    # The body and what follows it never run: their results, and a chord they belong to, say so.
    mark_downstream(app, continuation or [body], root_id, states.FAILURE, error, None, store, parts)
    if continuation:
        for task_id in body.result_ids():
            store(task_id, states.FAILURE, error, None, None)
    tail_id = ids[0] if ids else part.group_id
    request = Context(id=tail_id, task=body.name, group=part.group_id, root_id=root_id, called_directly=False,
                      args=body.args, kwargs=body.kwargs)
    for errback in _errbacks_of(body):
        run_errback(app, signature(errback, app=app), tail_id, error, None, publish=publishes.extend,
                    request=request)
