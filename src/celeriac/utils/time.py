"""The helpers of Celery's `celery.utils.time` that task code uses."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from ..schedules import timezone_named


def get_exponential_backoff_interval(factor: float, retries: int, maximum: float,
                                     full_jitter: bool = False) -> int:
    """Seconds to wait before retry number `retries + 1`: factor * 2**retries, capped at
    `maximum`; with `full_jitter`, a random whole number of seconds from 0 to that."""
    countdown = int(min(maximum, factor * (2 ** retries)))
    if full_jitter:
        countdown = random.randrange(countdown + 1)
    return max(0, countdown)


def maybe_timedelta(delta: Any) -> Any:
    """A number of seconds as a timedelta; anything else as it is."""
    if isinstance(delta, (int, float)) and not isinstance(delta, bool):
        return timedelta(seconds=delta)
    return delta


def maybe_iso8601(value: Any) -> datetime | None:
    """An ISO 8601 string as a datetime; a datetime or None as it is."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def remaining(start: datetime, ends_in: timedelta, now: datetime | None = None, relative: bool = False) -> timedelta:
    """How long until `start + ends_in` (negative once it has passed)."""
    current = now or (datetime.now(start.tzinfo) if start.tzinfo else datetime.now())
    return start + ends_in - current


class _Timezones:
    """`timezone.get_timezone("Europe/Paris")`, `timezone.utc`, `timezone.local`."""

    utc: tzinfo = UTC

    @property
    def local(self) -> tzinfo:
        return datetime.now().astimezone().tzinfo or UTC

    def get_timezone(self, zone: str | tzinfo) -> tzinfo:
        return timezone_named(zone)


timezone = _Timezones()

__all__ = ["get_exponential_backoff_interval", "maybe_iso8601", "maybe_timedelta", "remaining", "timezone"]
