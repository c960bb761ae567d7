"""A chord whose header is a generator: members are sent as the generator yields them.

``chord((add.s(i, i) for i in range(100_000)), tsum.s()).delay()`` does not build the
whole header first. The client pulls members from the generator and publishes them in
batches of ``LAZY_BATCH``; the first tasks start while the generator is still running.

The size of the chord is not known until the generator ends, so only the last member's
message carries it (``chord_size``); the others say 0, "unknown here". The result store
remembers the largest size any member reported and fires the chord when that many distinct
members are recorded. A chord can only complete once its last member is recorded, so the
size is always known by then, and the body still runs exactly once.

The generator is read once: the members it yields are kept (as Celery's lazy header keeps
them), so the same chord object can be sent again, inspected (``chord.header``) or turned
into JSON, which reads the rest of the generator first.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .. import protocol, signals, states
from ..brokers import Outgoing
from .signature import _TIMING_OPTIONS, TAIL_OPTIONS, Signature, _as_list, _root_of, merge_options

if TYPE_CHECKING:
    from ..result import AsyncResult, GroupResult
    from .workflows import chord

# Members published per broker call: early first tasks, still a pipelined publish.
LAZY_BATCH = 100


class LazyHeader:
    """The members of a chord header, read from a generator on demand and remembered."""

    def __init__(self, source: Iterator[Any], options: dict[str, Any] | None = None) -> None:
        self._source: Iterator[Any] | None = source
        self._seen: list[Any] = []
        self.options: dict[str, Any] = dict(options or {})

    def __iter__(self) -> Iterator[Any]:
        index = 0
        while True:
            if index < len(self._seen):
                yield self._seen[index]
            elif self._source is None:
                return
            else:
                try:
                    item = next(self._source)
                except StopIteration:
                    self._source = None
                    return
                self._seen.append(item)
                yield item
            index += 1

    def all(self) -> list[Any]:
        """Every member: reads what is left of the generator."""
        return list(self)

    def __repr__(self) -> str:
        more = ", ..." if self._source is not None else ""
        return f"<lazy header: {len(self._seen)} read{more}>"


def is_lazy(header: Any) -> bool:
    """A header given as a generator or another one-shot iterator (not a list, tuple or group)."""
    return isinstance(header, Iterator) and not isinstance(header, dict)


def send_lazy_chord(ch: "chord", args: Any, kwargs: dict[str, Any] | None,
                    options: dict[str, Any]) -> "AsyncResult[Any]":
    """Publish the chord's members as its generator yields them; returns the body's result."""
    from ..result import GroupResult
    from ..task import current_task_and_request
    from .workflows import _single_result

    app = ch.app
    lazy: LazyHeader = ch["kwargs"]["header"]
    opts = merge_options(ch.options, options)
    opts.pop("chain", None)
    tail = {k: opts.pop(k) for k in TAIL_OPTIONS if k in opts}
    errbacks = _as_list(opts.pop("link_error", None))
    body = ch.body._with_tail(tail)
    if errbacks:
        body.options["link_error"] = _as_list(body.options.get("link_error")) + errbacks
    body_result = body.freeze()
    group_id = str(lazy.options.get("task_id") or protocol.new_id())
    running = current_task_and_request()
    request = running[1] if running is not None and not running[1].called_directly else None
    known_children = len(request.children) if request is not None else 0
    partial = tuple(args or ())
    try:
        results = _publish_members(app, lazy, body, group_id, partial, dict(kwargs or {}), opts,
                                   lambda s: _single_result(s if isinstance(s, Signature)
                                                            else Signature.from_dict(s, app=ch._app)))
    except Exception as exc:
        _fail_body(app, body, exc)
        raise
    header_result: GroupResult = GroupResult(group_id, results, app=app)
    if not results:  # nothing to wait for: the body runs now, with no results
        timing = {k: v for k, v in opts.items() if k in _TIMING_OPTIONS}
        _publish_announced(app, body.messages(app, ([],), {}, timing), f"chord body {body.name}")
    body_first = _root_of(body_result)  # the body's first step (the body may be a chain)
    body_first.parent = header_result
    if request is not None:  # sent from a task: two children, the header group and the body
        from ..result import child_entry
        del request.children[known_children:]
        request.children.append(child_entry(header_result))
        request.children.append(child_entry(body_first))
    return body_result  # type: ignore[return-value]


def _publish_members(app: Any, lazy: LazyHeader, body: Signature, group_id: str, args: tuple[Any, ...],
                     kwargs: dict[str, Any], opts: dict[str, Any], as_member: Any) -> list[Any]:
    """Read, place and publish the members in batches; only the last one carries the size."""
    unknown_size = {**dict(body), "chord_size": 0}
    results: list[Any] = []
    batch: list[Outgoing] = []
    items = iter(lazy)
    end = object()
    current = next(items, end)
    index = 0
    while current is not end:
        following = next(items, end)
        member = as_member(current)
        results.append(member.freeze())
        size = {**dict(body), "chord_size": index + 1} if following is end else unknown_size
        placed = member._with_tail({"group_id": group_id, "group_index": index, "chord": size})
        batch.extend(placed.messages(app, args, kwargs, dict(opts)))
        if len(batch) >= LAZY_BATCH or following is end:
            _publish_announced(app, batch, f"chord {group_id}: members up to #{index}")
            batch = []
        current, index = following, index + 1
    return results


def _fail_body(app: Any, body: Signature, exc: BaseException) -> None:
    """The header's generator broke: the chord can never complete, so its body says why
    (instead of a result that stays PENDING forever)."""
    from ..exceptions import ChordError
    error = ChordError(f"the chord header's generator raised {exc!r}; the members sent before it stay "
                       "sent, and the body will not run")
    for task_id in body.result_ids():
        app.store_state(task_id, states.FAILURE, error)


def _publish_announced(app: Any, messages: Any, what: str) -> None:
    app.publish(messages, what=what)
    if signals.after_task_publish.receivers:  # tracing and other listeners see every publish
        app._announce_published(messages)
