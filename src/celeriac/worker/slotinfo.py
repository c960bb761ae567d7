"""What a pool slot tells its supervisor for `inspect active` and `inspect stats`.

A pool process writes two small JSON blobs into its shared slot: the request it is running
(arguments and delivery info, as Celery's `Request.info()` gives them) and its count of
finished tasks by name. The supervisor answers remote-control commands from them without
asking the pool process (which may be busy in a task for hours). The counts are guarded by
a sequence number (odd while being written), so a reader never takes a half-written blob.
"""

from __future__ import annotations

import json
from typing import Any

INFO_SIZE = 4096
TOTALS_SIZE = 16384


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=repr).encode()


def write_info(slot: Any, task_id: str, args: Any, kwargs: Any, delivery_info: dict[str, Any],
               message_size: int, reprs: tuple[Any, Any]) -> None:
    """The running request's details. Arguments too big for the slot are shown as the reprs the
    sender put in the message (`argsrepr`, `kwargsrepr`): a big message is never encoded again."""
    info = {"id": task_id, "args": args, "kwargs": kwargs, "delivery_info": delivery_info}
    data = _encode(info) if message_size < INFO_SIZE - 256 else b""
    if not data or len(data) >= INFO_SIZE:
        info["args"], info["kwargs"] = (str(r)[:1000] if r is not None else None for r in reprs)
        data = _encode(info)
    slot.info = data if len(data) < INFO_SIZE else b""


def read_info(slot: Any, task_id: str) -> dict[str, Any]:
    """The details of `task_id` if the slot still describes it, else {}."""
    try:
        info = json.loads(bytes(slot.info) or b"{}")
    except ValueError:  # being rewritten for the next task
        return {}
    return info if isinstance(info, dict) and info.get("id") == task_id else {}


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
