"""Unique tasks: while one call with a key is queued, scheduled or running, the same call
again publishes nothing and answers with the first one's result handle.

The key is held in the result store, claimed atomically (one script on Redis, one write
transaction on SQLite), so any number of concurrent callers create one task. The message
carries its key in a header; the worker lets go of the key when the task reaches a final
state (in the same batch as its result), and the hold expires after `unique_for` seconds
whatever happens (a worker killed with SIGKILL keeps it until then or until the task runs
again). A retry keeps the task's id, and so its key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable

UNIQUE_HEADER = "celeriac_unique"


def unique_hold(name: str, task: Any, args: Any, kwargs: Any, options: dict[str, Any]) -> tuple[str, float] | None:
    """Takes `unique_key` / `unique_for` out of the call's options (falling back to the
    task's own) and returns (key, seconds to hold it), or None for an ordinary call."""
    seconds = options.pop("unique_for", None)
    key = options.pop("unique_key", None)
    if seconds is None:
        seconds = getattr(task, "unique_for", None)
    if key is None and seconds is None:
        return None
    if seconds is None or float(seconds) <= 0:
        raise ValueError(f"sending {name}: unique_key= needs unique_for= (how many seconds the key may be "
                         "held at most), on the call or the task")
    if key is None:
        make: Callable[[Any, Any], str] | str | None = getattr(task, "unique_key", None)
        if callable(make):
            key = make(tuple(args or ()), dict(kwargs or {}))
        else:
            key = make if isinstance(make, str) else arguments_key(args, kwargs)
    # Under the task's name: the same key on two different tasks never blocks one by the other.
    return f"{name}:{key}", float(seconds)


def arguments_key(args: Any, kwargs: Any) -> str:
    """The canonical JSON of the arguments (hashed: arguments can be big)."""
    text = json.dumps([list(args or ()), dict(kwargs or {})], sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# --- canvas members ---
#
# A member of a chain, group or chord cannot simply be left out when its call is already
# pending: the workflow around it waits for its result (the next step, the chord's count).
# So a member whose key is held is still sent, marked as a follower of the task holding the
# key; the worker never runs it, but waits (in the broker) for the holder to finish and takes
# its outcome as the member's own - one run of the call, and the workflow goes on with it.

FOLLOW_HEADER = "celeriac_unique_follows"  # [holder task id, key, seconds]


def member_headers(app: Any, name: str, args: Any, kwargs: Any, options: dict[str, Any],
                   task_id: str) -> dict[str, Any] | None:
    """The headers that make a canvas member unique (it holds the key now) or a follower (the
    same call is pending as another task); None for an ordinary member. Takes the unique
    options out of `options`."""
    hold = unique_hold(name, app.tasks.get(name), args, kwargs, options)
    if hold is None:
        return None
    key, seconds = hold
    holder = app.backend.claim_unique(key, task_id, seconds)
    if holder == task_id:
        return {UNIQUE_HEADER: key}
    return {FOLLOW_HEADER: [holder, key, seconds]}
