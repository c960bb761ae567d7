"""Rate limits as written ("10/s", "100/m", "1000/h"): read by the client (remote control
checks them before sending) and by the worker (worker/ratelimit.py enforces them)."""

from __future__ import annotations

from typing import Any

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def interval_of(rate: Any) -> float | None:
    """Seconds between starts for a rate ("10/s", "100/m", "1000/h", or a number per second)."""
    if rate is None or rate == "":
        return None
    if isinstance(rate, (int, float)):
        return 1.0 / float(rate) if rate > 0 else None
    text = str(rate).strip()
    count, _, unit = text.partition("/")
    try:
        number = float(count)
    except ValueError:
        raise ValueError(f"rate limit {rate!r} is not like '10/s', '100/m' or '1000/h'") from None
    per = _UNITS.get((unit or "s").strip()[:1].lower())
    if per is None:
        raise ValueError(f"rate limit {rate!r}: the unit must be s, m or h")
    return per / number if number > 0 else None
