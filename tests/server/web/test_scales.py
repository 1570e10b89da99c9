"""Chart ticks are nice numbers and round moments; labels are short and exact."""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise

import pytest

from conveyor.server.web.scales import (
    clock,
    day,
    duration_ticks,
    ms,
    nice_ticks,
    number,
    per_day,
    percent,
    seconds,
    time_ticks,
)

T = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


@pytest.mark.parametrize(
    ("lo", "hi", "ticks"),
    [
        (0, 1, [0, 0.25, 0.5, 0.75, 1]),
        (0, 100, [0, 25, 50, 75, 100]),
        (3, 97, [0, 25, 50, 75, 100]),
        (0, 7, [0, 2, 4, 6, 8]),
        (0, 0.37, [0, 0.1, 0.2, 0.3, 0.4]),
        (0.1, 0.3, [0.1, 0.15, 0.2, 0.25, 0.3]),  # no 0.30000000000000004
        (0, 0.0025, [0, 0.001, 0.002, 0.003]),
        (-5, 5, [-5, -2.5, 0, 2.5, 5]),
        (0, 12, [0, 5, 10, 15]),
        (0, 101, [0, 50, 100, 150]),
        (100, 110, [100, 102.5, 105, 107.5, 110]),
        (0, 86400, [0, 25000, 50000, 75000, 100000]),
        (0, 1e6, [0, 250000, 500000, 750000, 1e6]),
    ],
)
def test_nice_ticks(lo: float, hi: float, ticks: list[float]) -> None:
    assert nice_ticks(lo, hi) == ticks


@pytest.mark.parametrize("hi", [10**e * m for e in range(-4, 7) for m in (1, 1.1, 1.7, 3.3, 6.1)])
@pytest.mark.parametrize("lo", [0.0, -0.4, 0.9])
def test_nice_ticks_are_3_to_5_nice_numbers_around_the_range(lo: float, hi: float) -> None:
    if hi <= lo:
        return
    ticks = nice_ticks(lo, hi)
    assert 3 <= len(ticks) <= 5
    assert ticks[0] <= lo and ticks[-1] >= hi
    step = ticks[1] - ticks[0]
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert any(math.isclose(mantissa, m) for m in (1, 2, 2.5, 5)), (ticks, step)
    for a, b in pairwise(ticks):
        assert math.isclose(b - a, step, rel_tol=1e-6)


@pytest.mark.parametrize(("lo", "hi"), [(1, 1), (2, 1), (0, math.inf), (math.nan, 1)])
def test_nice_ticks_need_a_range(lo: float, hi: float) -> None:
    with pytest.raises(ValueError, match="finite lo < hi"):
        nice_ticks(lo, hi)


H, D = 3600, 86400


@pytest.mark.parametrize(
    ("lo", "hi", "ticks"),
    [
        (0, 60, [0, 15, 30, 45, 60]),
        (0, 1860, [0, 600, 1200, 1800, 2400]),  # 10 min, not 500 s
        (0, 12600, [0, H, 2 * H, 3 * H, 4 * H]),  # hours, not 1.4 h
        (60, D, [0, 6 * H, 12 * H, 18 * H, D]),
        (0, 7 * D, [0, 2 * D, 4 * D, 6 * D, 8 * D]),
        (0, 3, [0, 1, 2, 3]),
        (0, 0.15, [0, 0.05, 0.1, 0.15]),  # under a second: plain nice numbers
        (0, 0.9, [0, 0.25, 0.5, 0.75, 1]),
        (0, 20 * 365 * D, [0, 2e8, 4e8, 6e8, 8e8]),  # past the longest round span
    ],
)
def test_duration_ticks(lo: float, hi: float, ticks: list[float]) -> None:
    assert duration_ticks(lo, hi) == ticks


@pytest.mark.parametrize("hi", [m * 10**e for e in range(-2, 9) for m in (1, 1.3, 2.2, 4.7, 7.9)])
def test_duration_ticks_are_3_to_5_around_the_range(hi: float) -> None:
    ticks = duration_ticks(0, hi)
    assert 3 <= len(ticks) <= 5
    assert ticks[0] <= 0 and ticks[-1] >= hi
    assert len({round(b - a, 9) for a, b in pairwise(ticks)}) == 1


@pytest.mark.parametrize(
    ("lo", "hi", "ticks"),
    [
        # (from T + lo to T + hi, the ticks as offsets from 22:13:00, the minute of T)
        (1, 59, [30, 40, 50, 60, 70]),  # 22:13:21-22:14:19: every 10 s from 22:13:30
        (0, 300, [60, 120, 180, 240, 300]),  # 22:13:20-22:18:20: every minute from 22:14
        (0, 3600, [120, 1020, 1920, 2820]),  # 22:13:20-23:13:20: 22:15, 22:30, 22:45, 23:00
        (0, 7200, [1020, 2820, 4620, 6420]),  # to 00:13:20: every 30 min (15 min: 8 ticks)
    ],
)
def test_time_ticks_are_round_moments(lo: float, hi: float, ticks: list[float]) -> None:
    found = time_ticks(T + lo, T + hi)
    assert [t - (T - 20) for t in found] == ticks


def test_time_ticks_of_days_fall_on_midnight_utc() -> None:
    ticks = time_ticks(T, T + 86400 * 3)
    assert [clock(t) for t in ticks] == ["00:00:00"] * 3


@pytest.mark.parametrize(
    ("lo", "hi", "ticks"),
    [
        (T, T, [T]),  # one moment
        (T + 0.2, T + 0.7, [T + 0.2, T + 0.7]),  # less than a second: its ends
        (0, 1e12, [0, 2.5e11, 5e11, 7.5e11, 1e12]),  # longer than any round span
    ],
)
def test_time_ticks_edges(lo: float, hi: float, ticks: list[float]) -> None:
    assert time_ticks(lo, hi) == ticks


@pytest.mark.parametrize(
    ("format", "value", "text"),
    [
        (number, 0, "0"),
        (number, 0.25, "0.25"),
        (number, 12.5, "12.5"),
        (number, 2500, "2.5k"),
        (number, 1_234_567, "1.23M"),
        (number, 3e9, "3G"),
        (number, -3, "-3"),
        (number, 1 / 3, "0.333"),
        (number, 0.0025, "0.0025"),
        (percent, 0.025, "2.5%"),
        (percent, 1 / 3, "33.3%"),
        (percent, 1, "100%"),
        (percent, 0, "0%"),
        (ms, 0.0123, "12.3 ms"),
        (ms, 1.5, "1500 ms"),
        (seconds, 0, "0 s"),
        (seconds, 45, "45 s"),
        (seconds, 90, "1.5 min"),
        (seconds, 1860, "31 min"),
        (seconds, 12600, "3.5 h"),
        (seconds, 86400, "1 d"),
        (per_day, 1 / 3, "0.333/day"),
        (clock, T, "22:13:20"),
        (day, T, "Nov 14"),
        (day, 0, "Jan 1"),
    ],
)
def test_formats(format: Callable[[float], str], value: float, text: str) -> None:
    assert format(value) == text


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0, "0"),
        (0.25, "0.25"),
        (12.5, "12.5"),
        (1333.3, "1.33k"),
        (2_500_000, "2.5M"),
        (0.0243, "0.0243"),
        (3.13e-20, "3.13e-20"),
        (4.1e15, "4.1e+15"),
        (-0.5, "-0.5"),
    ],
)
def test_number_reads_short_near_1_and_in_scientific_notation_far_from_it(
    value: float, shown: str
) -> None:
    assert number(value) == shown
