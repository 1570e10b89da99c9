"""Deployment windows: "Mon-Thu 09:00-16:00 Europe/Madrid"."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from conveyor.config.base import describe
from conveyor.config.values import ScalarType

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_FULL_DAY_NAMES = (
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
)
_DAYS = {name.lower(): i for i, name in enumerate(DAY_NAMES)} | {
    name: i for i, name in enumerate(_FULL_DAY_NAMES)
}
_TIME_RANGE_RE = re.compile(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})")
_EXAMPLE = "a window like 'Mon-Thu 09:00-16:00 Europe/Madrid' (days, a time range, a time zone)"
_DAY = r"[A-Za-z]{3,9}"
WINDOW_PATTERN = (
    rf"^(?:{_DAY}(?:-{_DAY})?(?:,{_DAY}(?:-{_DAY})?)* +)?"
    r"\d{1,2}:\d{2}-\d{1,2}:\d{2} +[A-Za-z0-9_+\-/]+$"
)


def _parse_days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for item in text.split(","):
        ends = item.split("-")
        if len(ends) > 2 or not all(ends):
            raise ValueError(f"expected days like Mon-Fri or Mon,Wed,Fri, got {describe(text)}")
        indexes = []
        for name in ends:
            if name.lower() not in _DAYS:
                raise ValueError(
                    f"expected days like Mon-Fri or Mon,Wed,Fri, got {describe(text)} "
                    f"(unknown day {describe(name)}; days are {', '.join(DAY_NAMES)})"
                )
            indexes.append(_DAYS[name.lower()])
        first, last = indexes[0], indexes[-1]
        # A range may wrap around the week: Fri-Mon is Fri, Sat, Sun, Mon.
        span = (last - first) % 7
        days.update((first + i) % 7 for i in range(span + 1))
    return frozenset(days)


def _parse_times(text: str) -> tuple[time, time]:
    match = _TIME_RANGE_RE.fullmatch(text)
    expected = "expected a time range like 09:00-16:00"
    if match is None:
        raise ValueError(f"{expected}, got {describe(text)}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise ValueError(f"{expected} (hours 00-23, minutes 00-59), got {describe(text)}")
    start, end = time(h1, m1), time(h2, m2)
    if start == end:
        expected += " that starts and ends at different times"
        raise ValueError(f"{expected}, got {describe(text)}")
    return start, end


def _parse_zone(text: str) -> ZoneInfo:
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"expected an IANA time zone like Europe/Madrid or UTC, got {describe(text)}"
        ) from None


@dataclass(frozen=True)
class Window(ScalarType):
    """When deployments may start: listed days, a time of day range, in a time zone.

    A range whose end is before its start runs past midnight ("Fri 22:00-02:00" is
    open from Friday 22:00 to Saturday 02:00); the days name the day it opens.
    """

    text: str
    days: frozenset[int]  # 0 is Monday, as datetime.weekday()
    start: time
    end: time
    zone: ZoneInfo

    JSON_SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "string",
        "pattern": WINDOW_PATTERN,
        "description": "Days (Mon-Fri, Mon,Wed,Fri; leave out for every day), a time range "
        "HH:MM-HH:MM and an IANA time zone. Deployments wait outside it.",
        "examples": ["Mon-Thu 09:00-16:00 Europe/Madrid"],
    }

    @classmethod
    def parse(cls, value: object) -> Window:
        if isinstance(value, Window):
            return value
        if not isinstance(value, str):
            raise ValueError(f"expected {_EXAMPLE}, got {describe(value)}")
        tokens = value.split()
        if len(tokens) == 3:
            days = _parse_days(tokens[0])
        elif len(tokens) == 2:
            days = frozenset(range(7))
        else:
            raise ValueError(f"expected {_EXAMPLE}, got {describe(value)}")
        start, end = _parse_times(tokens[-2])
        zone = _parse_zone(tokens[-1])
        return cls(text=value, days=days, start=start, end=end, zone=zone)

    def __str__(self) -> str:
        return self.text

    @property
    def overnight(self) -> bool:
        """Whether the window runs past midnight into the next day."""
        return self.end < self.start

    def contains(self, dt: datetime) -> bool:
        """Whether a deployment may start at the aware datetime dt."""
        local = _aware(dt).astimezone(self.zone)
        now = local.time()
        weekday = local.weekday()
        if not self.overnight:
            return weekday in self.days and self.start <= now < self.end
        opened_today = weekday in self.days and now >= self.start
        opened_yesterday = (weekday - 1) % 7 in self.days and now < self.end
        return opened_today or opened_yesterday

    def next_open(self, dt: datetime) -> datetime:
        """The first moment at or after dt when the window is open, in the window's zone."""
        local = _aware(dt).astimezone(self.zone)
        if self.contains(dt):
            return local
        for offset in range(8):
            day = local.date() + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            # Through UTC and back so that a start inside a DST gap (02:30 on the
            # spring-forward night) lands on the first real instant after it.
            opening = datetime.combine(day, self.start, tzinfo=self.zone)
            opening = opening.astimezone(UTC).astimezone(self.zone)
            if opening >= local:
                return opening
        raise AssertionError("a window with at least one day opens within 8 days")


def _aware(dt: datetime) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError("expected a timezone-aware datetime, got a naive one")
    return dt
