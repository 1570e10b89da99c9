from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from conveyor.config import Window

MADRID = ZoneInfo("Europe/Madrid")
WORKDAYS = "Mon-Thu 09:00-16:00 Europe/Madrid"


@pytest.mark.parametrize(
    ("written", "days", "start", "end", "zone"),
    [
        (WORKDAYS, {0, 1, 2, 3}, time(9), time(16), "Europe/Madrid"),
        ("Mon,Wed,Fri 08:30-12:00 UTC", {0, 2, 4}, time(8, 30), time(12), "UTC"),
        ("sat 10:00-11:00 America/New_York", {5}, time(10), time(11), "America/New_York"),
        ("Fri-Mon 22:00-02:00 Asia/Tokyo", {4, 5, 6, 0}, time(22), time(2), "Asia/Tokyo"),
        ("Mon-Tue,Thu 9:00-17:00 UTC", {0, 1, 3}, time(9), time(17), "UTC"),
        ("Monday-Friday 09:00-17:00 UTC", {0, 1, 2, 3, 4}, time(9), time(17), "UTC"),
        ("09:00-17:00 UTC", set(range(7)), time(9), time(17), "UTC"),
    ],
)
def test_parse(written: str, days: set[int], start: time, end: time, zone: str) -> None:
    window = Window.parse(written)
    assert window.days == days
    assert (window.start, window.end) == (start, end)
    assert window.zone.key == zone
    assert str(window) == written


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("Mon-Xyz 09:00-16:00 Europe/Madrid", "unknown day 'Xyz'"),
        ("Mon-Thu 09:00-16:00 Europe/Madird", "expected an IANA time zone"),
        ("Mon-Thu 09:00-16:00 ../../etc/passwd", "expected an IANA time zone"),
        ("Mon-Thu 9-16 Europe/Madrid", "expected a time range like 09:00-16:00"),
        ("Mon-Thu 09:00-25:00 Europe/Madrid", "hours 00-23"),
        ("Mon-Thu 09:00-09:00 Europe/Madrid", "different times"),
        ("Mon-Thu 09:00-16:00", "expected a time range"),
        ("Mon-Thu", "expected a window like"),
        ("Mon--Thu 09:00-16:00 UTC", "expected days like Mon-Fri"),
        (42, "expected a window like"),
    ],
)
def test_parse_rejects(written: object, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        Window.parse(written)


def madrid(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=MADRID)


# 2024-03-04 is a Monday.
@pytest.mark.parametrize(
    ("written", "moment", "inside"),
    [
        (WORKDAYS, madrid(2024, 3, 4, 9, 0), True),
        (WORKDAYS, madrid(2024, 3, 4, 8, 59), False),
        (WORKDAYS, madrid(2024, 3, 4, 15, 59), True),
        (WORKDAYS, madrid(2024, 3, 4, 16, 0), False),  # the end is exclusive
        (WORKDAYS, madrid(2024, 3, 7, 12, 0), True),  # Thursday
        (WORKDAYS, madrid(2024, 3, 8, 12, 0), False),  # Friday
        # 08:30 UTC is 09:30 in Madrid in winter (CET, +1)...
        (WORKDAYS, datetime(2024, 3, 4, 8, 30, tzinfo=UTC), True),
        # ...and 07:30 UTC is 09:30 in summer (CEST, +2).
        (WORKDAYS, datetime(2024, 7, 1, 7, 30, tzinfo=UTC), True),
        (WORKDAYS, datetime(2024, 7, 1, 6, 30, tzinfo=UTC), False),
        # Monday 01:00 in Madrid is still Sunday in New York.
        (WORKDAYS, datetime(2024, 3, 3, 19, 0, tzinfo=timezone(timedelta(hours=-5))), False),
        ("Fri 22:00-02:00 Europe/Madrid", madrid(2024, 3, 8, 23, 0), True),
        ("Fri 22:00-02:00 Europe/Madrid", madrid(2024, 3, 9, 1, 59), True),  # Saturday
        ("Fri 22:00-02:00 Europe/Madrid", madrid(2024, 3, 9, 2, 0), False),
        ("Fri 22:00-02:00 Europe/Madrid", madrid(2024, 3, 8, 1, 0), False),
    ],
)
def test_contains(written: str, moment: datetime, inside: bool) -> None:
    assert Window.parse(written).contains(moment) is inside


@pytest.mark.parametrize(
    ("written", "moment", "opens"),
    [
        # inside: now
        (WORKDAYS, madrid(2024, 3, 4, 10, 0), madrid(2024, 3, 4, 10, 0)),
        # before the start on an open day: later that day
        (WORKDAYS, madrid(2024, 3, 4, 7, 0), madrid(2024, 3, 4, 9, 0)),
        # after the end on Monday: Tuesday morning
        (WORKDAYS, madrid(2024, 3, 4, 16, 0), madrid(2024, 3, 5, 9, 0)),
        # Thursday evening: over the weekend to Monday
        (WORKDAYS, madrid(2024, 3, 7, 17, 0), madrid(2024, 3, 11, 9, 0)),
        # asked in UTC on Friday: Monday 09:00 Madrid, which is 08:00 UTC
        (
            WORKDAYS,
            datetime(2024, 3, 8, 12, 0, tzinfo=UTC),
            datetime(2024, 3, 11, 8, 0, tzinfo=UTC),
        ),
        # across the spring DST change (Sunday 2024-03-31): Monday 09:00 is 07:00 UTC
        (WORKDAYS, madrid(2024, 3, 28, 18, 0), datetime(2024, 4, 1, 7, 0, tzinfo=UTC)),
        # a start inside the DST gap opens at the first real instant after it
        ("Sun 02:30-04:00 Europe/Madrid", madrid(2024, 3, 30, 12, 0), madrid(2024, 3, 31, 3, 30)),
        # a window over midnight, asked after it closed
        ("Fri 22:00-02:00 Europe/Madrid", madrid(2024, 3, 9, 3, 0), madrid(2024, 3, 15, 22, 0)),
        # same weekday, one week later
        (
            "Wed 09:00-10:00 UTC",
            datetime(2024, 3, 6, 10, 0, tzinfo=UTC),
            datetime(2024, 3, 13, 9, 0, tzinfo=UTC),
        ),
    ],
)
def test_next_open(written: str, moment: datetime, opens: datetime) -> None:
    window = Window.parse(written)
    got = window.next_open(moment)
    assert got == opens
    assert got.tzinfo is window.zone
    assert window.contains(got)


def test_naive_datetimes_are_refused() -> None:
    window = Window.parse(WORKDAYS)
    with pytest.raises(ValueError, match="timezone-aware"):
        window.contains(datetime(2024, 3, 4, 10, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        window.next_open(datetime(2024, 3, 4, 10, 0))
