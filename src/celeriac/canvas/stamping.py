"""Stamping (Celery 5.3's API): label every task of a workflow with headers of your own.

``sig.stamp(visitor=None, append_stamps=False, **headers)`` walks a signature or a whole
workflow and writes the stamps into each task's options: the stamp values under their own
names, and their names in ``stamped_headers``. When the task is sent, the stamps travel in
the message headers (``stamped_headers`` and ``stamps``), so the running task reads them as
``self.request.stamped_headers`` and ``self.request.stamps``; with ``result_extended`` they
are stored with the result too; ``app.control.revoke_by_stamped_headers`` revokes by them.

A ``StampingVisitor`` decides stamps per node: the walk calls its ``on_*`` methods and
merges what they return. A returned dict without a ``stamped_headers`` key stamps all its
keys; with one, only the keys it lists.

Stamps are written into the signatures of the workflow before it is sent, as in Celery:
stamp a workflow, then send it. What a task starts while it runs (a new chain, a callback
added later) is not stamped unless you stamp it.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from .signature import Signature, _as_list, signature

if TYPE_CHECKING:
    from .workflows import chain, chord, group

STAMPED_HEADERS = "stamped_headers"


class StampingVisitor(ABC):  # noqa: B024 - on_signature is abstract; the rest are optional hooks
    """Decides the stamps of each node of a workflow. Every method returns the headers to add
    (``on_*_end`` return nothing); only ``on_signature`` must be written."""

    def on_group_start(self, group: "group", **headers: Any) -> dict[str, Any]:
        return {}

    def on_group_end(self, group: "group", **headers: Any) -> None:
        return None

    def on_chain_start(self, chain: "chain", **headers: Any) -> dict[str, Any]:
        return {}

    def on_chain_end(self, chain: "chain", **headers: Any) -> None:
        return None

    @abstractmethod
    def on_signature(self, sig: Signature, **headers: Any) -> dict[str, Any]:
        """The stamps of one task."""

    def on_chord_header_start(self, sig: "chord", **headers: Any) -> dict[str, Any]:
        return self.on_group_start(sig.header, **headers)

    def on_chord_header_end(self, sig: "chord", **headers: Any) -> None:
        self.on_group_end(sig.header, **headers)

    def on_chord_body(self, sig: "chord", **headers: Any) -> dict[str, Any]:
        return {}

    def on_callback(self, callback: Signature, **headers: Any) -> dict[str, Any]:
        return {}

    def on_errback(self, errback: Signature, **headers: Any) -> dict[str, Any]:
        return {}


def merge_stamps(into: dict[str, Any], new: dict[str, Any], append: bool) -> None:
    """Merge `new` stamps into `into`: a stamp set again is replaced by the new value, or with
    `append`, both values are kept in a list. The names in ``stamped_headers`` add up."""
    for key, value in new.items():
        if key == STAMPED_HEADERS:
            into[key] = list(dict.fromkeys([*_as_list(into.get(key)), *_as_list(value)]))
        elif key in into and append:
            into[key] = [*_as_list(into[key]), *_as_list(value)]
        else:
            into[key] = copy.deepcopy(value)


def _named(headers: dict[str, Any]) -> dict[str, Any]:
    """A copy with ``stamped_headers`` filled in: every key is a stamp unless the dict says which."""
    found = dict(headers)
    if STAMPED_HEADERS not in found:
        found[STAMPED_HEADERS] = list(found)
    return found


def combine(sig: Signature, visitor_headers: dict[str, Any] | None, append: bool, own: bool,
            headers: dict[str, Any]) -> dict[str, Any]:
    """The stamps for `sig`: (with `own`) the stamps it already carries, then the inherited
    `headers`, then the visitor's, each later one merged over the earlier ones."""
    result: dict[str, Any] = {}
    if own:
        names = _as_list(sig.options.get(STAMPED_HEADERS))
        merge_stamps(result, {STAMPED_HEADERS: names, **{k: sig.options[k] for k in names if k in sig.options}},
                     append)
    merge_stamps(result, _named(headers), append)
    if visitor_headers is not None:
        merge_stamps(result, _named(visitor_headers), append)
    result[STAMPED_HEADERS] = [k for k in result[STAMPED_HEADERS] if k in result and k != STAMPED_HEADERS]
    return result


def stamp_links(sig: Signature, visitor: StampingVisitor | None, append: bool, headers: dict[str, Any]) -> None:
    """Stamp the callbacks and errbacks linked to `sig` (link them before stamping)."""
    for key, hook in (("link", "on_callback"), ("link_error", "on_errback")):
        linked = [signature(s, app=sig._app) if not isinstance(s, Signature) else s
                  for s in _as_list(sig.options.get(key))]
        for link in linked:
            extra = getattr(visitor, hook)(link, **headers) or {} if visitor is not None else None
            link.stamp(visitor, append, **combine(link, extra, append, False, headers))
        if linked:
            sig.options[key] = linked


def stamp_signature(sig: Signature, visitor: StampingVisitor | None, append: bool,
                    headers: dict[str, Any]) -> Signature:
    stamp_links(sig, visitor, append, headers)
    extra = (visitor.on_signature(sig, **headers) or {}) if visitor is not None else None
    return sig.set(**combine(sig, extra, append, True, headers))


def stamp_chain(sig: "chain", visitor: StampingVisitor | None, append: bool, headers: dict[str, Any]) -> None:
    extra = (visitor.on_chain_start(sig, **headers) or {}) if visitor is not None else None
    stamps = combine(sig, extra, append, True, headers)
    stamp_links(sig, visitor, append, stamps)
    for step in sig.tasks:
        step.stamp(visitor, append, **stamps)
    if visitor is not None:
        visitor.on_chain_end(sig, **stamps)


def stamp_group(sig: "group", visitor: StampingVisitor | None, append: bool, headers: dict[str, Any]) -> None:
    extra = (visitor.on_group_start(sig, **headers) or {}) if visitor is not None else None
    stamps = combine(sig, extra, append, True, headers)
    stamp_links(sig, visitor, append, stamps)
    for member in sig.tasks:
        member.stamp(visitor, append, **stamps)
    if visitor is not None:
        visitor.on_group_end(sig, **stamps)


def stamp_chord(sig: "chord", visitor: StampingVisitor | None, append: bool, headers: dict[str, Any]) -> None:
    extra = (visitor.on_chord_header_start(sig, **headers) or {}) if visitor is not None else None
    stamps = combine(sig, extra, append, True, headers)
    stamp_links(sig, visitor, append, stamps)
    for member in sig.header.tasks:
        member.stamp(visitor, append, **stamps)
    if visitor is not None:
        visitor.on_chord_header_end(sig, **stamps)
    body = sig["kwargs"].get("body")
    if body is not None:
        extra = (visitor.on_chord_body(sig, **stamps) or {}) if visitor is not None else None
        body.stamp(visitor, append, **combine(sig, extra, append, False, stamps))


def message_headers(stamped_headers: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The message headers that carry the stamps (Celery's layout); takes the stamp values out
    of `options`, where the signature kept them, so that they are not read as call options."""
    names = [str(n) for n in _as_list(stamped_headers)]
    return {STAMPED_HEADERS: names, "stamps": {name: options.pop(name, None) for name in names}}
