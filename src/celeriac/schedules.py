"""When periodic tasks run: `schedule` (a fixed interval) and `crontab` (wall-clock times).

Both answer one question, `next_after(instant, tz)`: the first tick strictly after an
instant (epoch seconds). Beat keeps the last tick it handled per entry, so the tick after
it is always known, whatever happened in between (restarts, a replica taking over).

Crontabs follow the wall clock of the app's `timezone` across daylight-saving changes:
- a fixed-hour crontab (say 02:30 every day) runs once per day: when the clocks spring
  forward over its time it runs as much later as they jumped (03:30); when they fall back
  and its time comes twice, it runs at the first one only;
- an every-hour crontab (hour="*") follows real time: it does not run in the hour that
  does not exist, and runs in both copies of the hour that repeats.
Intervals are elapsed time and know nothing about clocks.
"""

from __future__ import annotations

import calendar
import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, Iterable, Iterator, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["schedule", "crontab", "solar", "schedstate", "to_schedule", "timezone_named", "CrontabParseError"]

# A wall-clock time and the instant it names differ from naive ordering by at most the size
# of a clock change (two hours anywhere, historically): the search below keeps this margin.
_SHIFT_MARGIN = timedelta(hours=3)
_SEARCH_YEARS = 400  # the Gregorian cycle: what matches nothing in 400 years never matches


class schedstate(NamedTuple):  # noqa: N801 - Celery's name
    is_due: bool
    next: float  # seconds until it is worth asking again


class CrontabParseError(ValueError):
    """A crontab field that does not parse; the message names the field and the value."""


def timezone_named(name: str | tzinfo | None) -> tzinfo:
    """The `timezone` setting as a tzinfo (None: UTC, as Celery's default)."""
    if name is None or name == "":
        return UTC
    if isinstance(name, tzinfo):
        return name
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} in the timezone setting: use an IANA name "
                         "such as 'Europe/Berlin' or 'America/New_York'") from exc


def _aware(value: datetime | float, tz: tzinfo) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=tz)
    return datetime.fromtimestamp(float(value), tz)


class BaseSchedule:
    """What beat needs from any schedule."""

    def next_after(self, instant: float, tz: tzinfo = UTC) -> float:
        raise NotImplementedError

    def human(self) -> str:
        return repr(self)

    # Celery's schedule API, for code that asks a schedule directly.
    def remaining_estimate(self, last_run_at: datetime, tz: tzinfo = UTC, now: datetime | None = None) -> timedelta:
        last = _aware(last_run_at, tz).timestamp()
        current = _aware(now, tz).timestamp() if now is not None else datetime.now(UTC).timestamp()
        return timedelta(seconds=self.next_after(last, tz) - current)

    def is_due(self, last_run_at: datetime, tz: tzinfo = UTC, now: datetime | None = None) -> schedstate:
        remaining = self.remaining_estimate(last_run_at, tz, now).total_seconds()
        if remaining <= 0:
            current = _aware(now, tz).timestamp() if now is not None else datetime.now(UTC).timestamp()
            return schedstate(True, max(0.0, self.next_after(current, tz) - current))
        return schedstate(False, remaining)


class schedule(BaseSchedule):  # noqa: N801 - Celery's name
    """Every `run_every` (seconds or a timedelta), counted from the previous tick."""

    def __init__(self, run_every: float | timedelta, relative: bool = False, **_compat: Any) -> None:
        seconds = run_every.total_seconds() if isinstance(run_every, timedelta) else float(run_every)
        if not seconds > 0:
            raise ValueError(f"schedule(run_every={run_every!r}): the interval must be more than 0 seconds")
        self.seconds = seconds
        self.relative = relative  # accepted for Celery compatibility; ticks are always anchored

    @property
    def run_every(self) -> timedelta:
        return timedelta(seconds=self.seconds)

    def next_after(self, instant: float, tz: tzinfo = UTC) -> float:
        return instant + self.seconds

    def last_at_or_before(self, anchor: float, instant: float) -> float:
        """The newest tick of the series through `anchor` that is not after `instant`."""
        if instant <= anchor:
            return anchor
        return anchor + ((instant - anchor) // self.seconds) * self.seconds

    def human(self) -> str:
        return f"every {_seconds_text(self.seconds)}"

    def __repr__(self) -> str:
        return f"<freq: {_seconds_text(self.seconds)}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, schedule) and other.seconds == self.seconds

    def __hash__(self) -> int:
        return hash(self.seconds)


def _seconds_text(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} second{'s' if seconds != 1 else ''}"


_WEEKDAYS = {name: i for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_WEEKDAYS.update({"sunday": 0, "monday": 1, "tuesday": 2, "wednesday": 3, "thursday": 4, "friday": 5,
                  "saturday": 6})
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_name) if name})


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]


_FIELDS = {
    "minute": _Field("minute", 0, 59, {}),
    "hour": _Field("hour", 0, 23, {}),
    "day_of_week": _Field("day_of_week", 0, 6, _WEEKDAYS),
    "day_of_month": _Field("day_of_month", 1, 31, {}),
    "month_of_year": _Field("month_of_year", 1, 12, _MONTHS),
}
_PART = re.compile(r"^(?P<range>\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(?P<step>\d+))?$")


def parse_field(field: str, value: Any) -> frozenset[int]:
    """One crontab field in Celery's syntax: ``*``, ``*/15``, ``1-5``, ``0-30/10``, ``mon-fri``,
    ``1,15``, ``fri-mon`` (ranges may wrap), an int, or an iterable of those."""
    spec = _FIELDS[field]
    if isinstance(value, bool):
        raise CrontabParseError(f"crontab {field}={value!r}: expected a number, a string or a list")
    if isinstance(value, int):
        return frozenset(_checked(spec, value, value))
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if not text:
            raise CrontabParseError(f"crontab {field}={value!r}: empty field (use '*' for every {field})")
        out: set[int] = set()
        for part in text.split(","):
            out |= _parse_part(spec, part, value)
        if not out:
            raise CrontabParseError(f"crontab {field}={value!r}: matches no {field} at all")
        return frozenset(out)
    if isinstance(value, Iterable):
        out = set()
        for item in value:
            out |= parse_field(field, item)
        if not out:
            raise CrontabParseError(f"crontab {field}={value!r}: empty list")
        return frozenset(out)
    raise CrontabParseError(f"crontab {field}={value!r}: expected a number, a string or a list")


def _parse_part(spec: _Field, part: str, original: Any) -> set[int]:
    match = _PART.match(part)
    if not match:
        raise CrontabParseError(f"crontab {spec.name}={original!r}: cannot read {part!r} "
                                "(expected *, */n, a, a-b, a-b/n or a list of those)")
    step = int(match.group("step")) if match.group("step") else 1
    if step < 1:
        raise CrontabParseError(f"crontab {spec.name}={original!r}: a step must be at least 1")
    what = match.group("range")
    if what == "*":
        return set(range(spec.low, spec.high + 1, step))
    first_text, _, last_text = what.partition("-")
    first = _number(spec, first_text, original)
    if not last_text:
        if match.group("step"):  # "5/15": from 5 to the end in steps of 15, as cron reads it
            return set(range(first, spec.high + 1, step))
        return {first % 7 if spec.name == "day_of_week" else first}
    last = _number(spec, last_text, original)
    if spec.name == "day_of_week" and last == 0 and first > 0:
        last = 7  # "fri-sun": Sunday ends the week ("0-7" and "sun-7" are every day, as in cron)
    if last >= first:
        values = list(range(first, last + 1))
    else:  # wraps around: "fri-mon", "22-2"
        values = list(range(first, spec.high + 1)) + list(range(spec.low, last + 1))
    return {v % 7 if spec.name == "day_of_week" else v for v in values[::step]}


def _number(spec: _Field, text: str, original: Any) -> int:
    if text.isdigit():
        number = int(text)
        if spec.name == "day_of_week" and number == 7:
            return 7  # Sunday at the end of a range; a lone 7 becomes 0 in _parse_part
        return _checked(spec, number, original).pop()
    if text in spec.names:
        return spec.names[text]
    known = ", ".join(list(spec.names)[:12]) if spec.names else "numbers only"
    raise CrontabParseError(f"crontab {spec.name}={original!r}: unknown name {text!r} ({known})")


def _checked(spec: _Field, number: int, original: Any) -> set[int]:
    if spec.name == "day_of_week" and number == 7:
        return {0}  # 7 is Sunday too, as in cron
    if not spec.low <= number <= spec.high:
        raise CrontabParseError(f"crontab {spec.name}={original!r}: {number} is out of range "
                                f"{spec.low}-{spec.high}")
    return {number}


class crontab(BaseSchedule):  # noqa: N801 - Celery's name
    """Wall-clock times, cron-style. All given fields must match (day of week *and* day of
    month, as in Celery). Day of week: 0 or 7 = Sunday, or names ("mon-fri")."""

    def __init__(self, minute: Any = "*", hour: Any = "*", day_of_week: Any = "*",
                 day_of_month: Any = "*", month_of_year: Any = "*", **_compat: Any) -> None:
        self._orig = {"minute": minute, "hour": hour, "day_of_week": day_of_week,
                      "day_of_month": day_of_month, "month_of_year": month_of_year}
        self.minute = parse_field("minute", minute)
        self.hour = parse_field("hour", hour)
        self.day_of_week = parse_field("day_of_week", day_of_week)
        self.day_of_month = parse_field("day_of_month", day_of_month)
        self.month_of_year = parse_field("month_of_year", month_of_year)
        self._minutes = sorted(self.minute)
        self._hours = sorted(self.hour)
        self._every_hour = len(self.hour) == 24
        if not any(day <= _longest_month(month) for month in self.month_of_year for day in self.day_of_month):
            raise CrontabParseError(f"crontab day_of_month={day_of_month!r} month_of_year={month_of_year!r}: "
                                    "no such date exists, so it would never run")

    # --- the arithmetic ---

    def next_after(self, instant: float, tz: tzinfo = UTC) -> float:
        after = datetime.fromtimestamp(float(instant), UTC)
        wall_after = after.astimezone(tz).replace(tzinfo=None, fold=0)
        best: datetime | None = None
        best_wall: datetime | None = None
        for wall in self._walls_from((wall_after - _SHIFT_MARGIN).replace(second=0, microsecond=0)):
            if best_wall is not None and wall > best_wall + _SHIFT_MARGIN:
                break
            for moment in self._instants(wall, tz):
                if moment > after and (best is None or moment < best):
                    best, best_wall = moment, wall
        if best is None:
            raise ValueError(f"{self!r} has no run time in the next {_SEARCH_YEARS} years")
        return best.timestamp()

    def _instants(self, wall: datetime, tz: tzinfo) -> list[datetime]:
        """The instants a wall-clock time names in `tz` (see the module docstring)."""
        first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
        exists = first.astimezone(tz).replace(tzinfo=None) == wall
        if not exists:  # skipped by a spring-forward
            return [] if self._every_hour else [first]  # PEP 495: fold=0 keeps the old offset: 02:30 -> 03:30
        if first != second:  # repeated by a fall-back
            return [first, second] if self._every_hour else [first]
        return [first]

    def _walls_from(self, start: datetime) -> Iterator[datetime]:
        """Matching wall-clock times (naive) from `start` on, in order."""
        day = start.date()
        limit = date(min(day.year + _SEARCH_YEARS, 9999), 1, 1)
        while day < limit:
            if day.month not in self.month_of_year:
                day = date(day.year + (day.month == 12), day.month % 12 + 1, 1)
                continue
            if day.day in self.day_of_month and (day.isoweekday() % 7) in self.day_of_week:
                same_day = day == start.date()
                for hour in self._hours:
                    if same_day and hour < start.hour:
                        continue
                    for minute in self._minutes:
                        if same_day and hour == start.hour and minute < start.minute:
                            continue
                        yield datetime(day.year, day.month, day.day, hour, minute)
            day += timedelta(days=1)

    # --- presentation and comparison ---

    def human(self) -> str:
        o = self._orig
        return f"cron {o['minute']} {o['hour']} {o['day_of_month']} {o['month_of_year']} {o['day_of_week']}"

    def __repr__(self) -> str:
        o = self._orig
        return f"<crontab: {o['minute']} {o['hour']} {o['day_of_week']} {o['day_of_month']} {o['month_of_year']} " \
               "(m/h/dM/MY/d)>"

    def _key(self) -> tuple[frozenset[int], ...]:
        return (self.minute, self.hour, self.day_of_week, self.day_of_month, self.month_of_year)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, crontab) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())


# Celery's solar events: the sun's altitude (degrees) at the event, and whether it is the
# morning (-1), evening (+1) crossing or the transit (0).
SOLAR_EVENTS: dict[str, tuple[float, int]] = {
    "dawn_astronomical": (-18.0, -1), "dawn_nautical": (-12.0, -1), "dawn_civil": (-6.0, -1),
    "sunrise": (-0.833, -1), "solar_noon": (0.0, 0), "sunset": (-0.833, 1),
    "dusk_civil": (-6.0, 1), "dusk_nautical": (-12.0, 1), "dusk_astronomical": (-18.0, 1),
}
_J2000 = 2451545.0
_UNIX_EPOCH_JD = 2440587.5


class solar(BaseSchedule):  # noqa: N801 - Celery's name
    """At a solar event (`"sunrise"`, `"sunset"`, `"solar_noon"`, `"dawn_civil"`, ...) at a place:
    `solar("sunset", -37.81753, 144.96715)`. Times come from the sunrise equation (about a
    minute of accuracy); a day on which the event does not happen (polar day or night) is skipped."""

    def __init__(self, event: str, lat: float, lon: float, **_compat: Any) -> None:
        if event not in SOLAR_EVENTS:
            raise ValueError(f"solar event {event!r} is not known: use one of {', '.join(SOLAR_EVENTS)}")
        if not -90 <= lat <= 90:
            raise ValueError(f"solar latitude {lat!r} must be between -90 and 90")
        if not -180 <= lon <= 180:
            raise ValueError(f"solar longitude {lon!r} must be between -180 and 180")
        self.event, self.lat, self.lon = event, float(lat), float(lon)

    def event_on(self, day_number: int) -> float | None:
        """The event's instant (epoch seconds) on day `day_number` after J2000, or None."""
        altitude, side = SOLAR_EVENTS[self.event]
        mean_noon = day_number - self.lon / 360.0
        anomaly = math.radians((357.5291 + 0.98560028 * mean_noon) % 360)
        centre = 1.9148 * math.sin(anomaly) + 0.02 * math.sin(2 * anomaly) + 0.0003 * math.sin(3 * anomaly)
        ecliptic = math.radians((math.degrees(anomaly) + centre + 180 + 102.9372) % 360)
        transit = _J2000 + mean_noon + 0.0053 * math.sin(anomaly) - 0.0069 * math.sin(2 * ecliptic)
        declination = math.asin(math.sin(ecliptic) * math.sin(math.radians(23.4397)))
        phi = math.radians(self.lat)
        cos_hour = (math.sin(math.radians(altitude)) - math.sin(phi) * math.sin(declination)) / (
            math.cos(phi) * math.cos(declination) or 1e-12)
        if side and not -1 <= cos_hour <= 1:
            return None  # the sun does not cross that altitude on this day here
        hour_angle = math.degrees(math.acos(max(-1.0, min(1.0, cos_hour)))) if side else 0.0
        return (transit + side * hour_angle / 360.0 - _UNIX_EPOCH_JD) * 86400.0

    def next_after(self, instant: float, tz: tzinfo = UTC) -> float:
        first = math.floor(instant / 86400.0 + _UNIX_EPOCH_JD - _J2000) - 1
        for day in range(first, first + 370):
            at = self.event_on(day)
            if at is not None and at > instant:
                return at
        raise ValueError(f"{self!r} does not happen within a year of {datetime.fromtimestamp(instant, UTC)}")

    def human(self) -> str:
        return f"{self.event} at ({self.lat:g}, {self.lon:g})"

    def __repr__(self) -> str:
        return f"<solar: {self.event} at latitude {self.lat}, longitude: {self.lon}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, solar) and (other.event, other.lat, other.lon) == (self.event, self.lat, self.lon)

    def __hash__(self) -> int:
        return hash((self.event, self.lat, self.lon))


def _longest_month(month: int) -> int:
    return 29 if month == 2 else calendar.monthrange(2001, month)[1]


def to_schedule(value: Any) -> BaseSchedule:
    """What a beat_schedule entry may say: seconds, a timedelta, schedule(...), crontab(...) or solar(...)."""
    if isinstance(value, BaseSchedule):
        return value
    if isinstance(value, timedelta) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return schedule(value)
    if hasattr(value, "remaining_estimate") or hasattr(value, "is_due"):
        raise TypeError(f"schedule {value!r} is not supported: use a number of seconds, a timedelta, "
                        "celeriac.schedules.schedule(...) or celeriac.schedules.crontab(...)")
    raise TypeError(f"schedule {value!r}: expected seconds, a timedelta, schedule(...) or crontab(...)")
