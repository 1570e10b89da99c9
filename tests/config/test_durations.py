from __future__ import annotations

import pytest

from conveyor.config import format_duration, format_percent, parse_duration, parse_percent
from conveyor.config.durations import parse_positive_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("10m", 600.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1m30s", 90.0),
        ("1h1m1s500ms", 3661.5),
        ("1.5h", 5400.0),
        (" 45s ", 45.0),
        ("0s", 0.0),
        ("30", 30.0),
        ("2.5", 2.5),
        (30, 30.0),
        (1.5, 1.5),
        (0, 0.0),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["ten minutes", "10 m", "10M", "1y", "m", "", "-5s", -5, True, None, "30s1m", "1m1m", [1]],
)
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="expected a duration like 30s, 10m or 1h"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["0s", "0", 0, "0ms"])
def test_positive_duration_rejects_zero(text: object) -> None:
    with pytest.raises(ValueError, match="above zero"):
        parse_positive_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.5, "500ms"), (30, "30s"), (90, "1m30s"), (3600, "1h"), (90000, "1d1h")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "fraction"),
    [("1%", 0.01), ("0.5%", 0.005), ("25%", 0.25), ("100%", 1.0), ("0%", 0.0), ("5 %", 0.05)],
)
def test_parse_percent(text: str, fraction: float) -> None:
    assert parse_percent(text) == pytest.approx(fraction)
    assert parse_percent(format_percent(fraction)) == pytest.approx(fraction)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("150%", "between 0% and 100%"),
        ("1", "like 1% or 0.5%"),
        ("one percent", "like 1% or 0.5%"),
        ("-1%", "like 1% or 0.5%"),
        (0.01, "with a % sign"),
        (None, "like 1% or 0.5%"),
    ],
)
def test_parse_percent_rejects(value: object, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        parse_percent(value)
