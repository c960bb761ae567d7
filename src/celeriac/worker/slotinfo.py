"""What a pool slot tells its supervisor for `inspect active` and `inspect stats`.

A pool process writes two small blobs into its shared slot: the request it is running (its
message body as it came, and its delivery info: what Celery's `Request.info()` gives) and
its count of finished tasks by name (JSON, rewritten once per batch). The supervisor
answers remote-control commands from them without asking the pool process (which may be
busy in a task for hours). The counts are guarded by
a sequence number (odd while being written), so a reader never takes a half-written blob.
"""

from __future__ import annotations

import json
from typing import Any

from .. import protocol
from ..exceptions import CeleriacError

INFO_SIZE = 4096
TOTALS_SIZE = 16384
REPRS = "x-celeriac-reprs"  # the content type of an info whose arguments are the sender's reprs


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=repr).encode()


def write_info(slot: Any, task_id: str, delivery_info: dict[str, Any], content_type: str, body: bytes,
               reprs: tuple[Any, Any]) -> None:
    """The running request's details: a few lines and the message body as it came (decoded only
    when someone asks). A body too big for the slot, or one holding NUL bytes (which a shared
    slot cannot keep), is replaced by the reprs the sender put in the message."""
    head = (f"{task_id}\n{delivery_info.get('routing_key') or ''}\n{delivery_info.get('priority') or 0}\n"
            f"{1 if delivery_info.get('redelivered') else 0}\n").encode()
    if len(head) + len(content_type) + len(body) < INFO_SIZE - 1 and b"\0" not in body:
        slot.info = head + content_type.encode() + b"\n" + body
        return
    shown = _encode([str(r)[:1000] if r is not None else None for r in reprs])
    slot.info = (head + REPRS.encode() + b"\n" + shown)[: INFO_SIZE - 1]


def read_info(slot: Any, task_id: str, accept: frozenset[str]) -> dict[str, Any]:
    """{args, kwargs, delivery_info} of `task_id` if the slot still describes it, else {}."""
    parts = bytes(slot.info).split(b"\n", 5)
    if len(parts) != 6 or parts[0].decode(errors="replace") != task_id:
        return {}  # the slot moved on to another task (or is being rewritten)
    _id, queue, priority, redelivered, content_type, body = parts
    try:
        if content_type.decode() == REPRS:
            args, kwargs = json.loads(body)
        else:
            args, kwargs = protocol.loads(body, content_type.decode(), accept)[:2]
    except (ValueError, TypeError, CeleriacError):
        args = kwargs = None
    return {"args": list(args) if isinstance(args, (list, tuple)) else args, "kwargs": kwargs,
            "delivery_info": {"exchange": "", "routing_key": queue.decode(), "priority": int(priority or 0),
                              "redelivered": redelivered == b"1"}}


def publish_totals(slot: Any, totals: dict[str, int]) -> None:
    data = _encode(totals)
    while len(data) >= TOTALS_SIZE and totals:  # very many task names: the busiest ones fit
        totals = dict(sorted(totals.items(), key=lambda item: -item[1])[: max(1, len(totals) // 2)])
        data = _encode(totals)
    slot.totals_seq += 1
    slot.totals = data
    slot.totals_seq += 1


def read_totals(slot: Any, attempts: int = 20) -> dict[str, int] | None:
    """The slot's counts by task name, or None if they were being rewritten every time we looked."""
    for _ in range(attempts):
        before = int(slot.totals_seq)
        if before % 2:
            continue
        data = bytes(slot.totals)
        if int(slot.totals_seq) == before:
            try:
                totals = json.loads(data or b"{}")
            except ValueError:
                continue
            return {str(k): int(v) for k, v in totals.items()} if isinstance(totals, dict) else {}
    return None


def merge_totals(into: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    for name, count in more.items():
        into[name] = into.get(name, 0) + count
    return into
