"""Durations ("1m30s") and percentages ("0.5%") as written in conveyor.yml."""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

from conveyor.config.base import describe

_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_UNIT_ORDER = list(_UNIT_SECONDS)
_NUMBER = r"\d+(?:\.\d+)?"
_DURATION_RE = re.compile(rf"(?:{_NUMBER}(?:ms|s|m|h|d))+")
_PART_RE = re.compile(rf"({_NUMBER})(ms|s|m|h|d)")
_PLAIN_NUMBER_RE = re.compile(_NUMBER)
_PERCENT_RE = re.compile(rf"({_NUMBER})\s*%")

DURATION_PATTERN = rf"^(?:{_NUMBER}(?:ms|s|m|h|d))+$|^{_NUMBER}$"
PERCENT_PATTERN = rf"^{_NUMBER}\s*%$"
_DURATION_EXAMPLE = "a duration like 30s, 10m or 1h"


def parse_duration(value: object) -> float:
    """Parse "500ms", "30s", "10m", "2h", "1d", "1m30s" or a bare number of seconds.

    Returns seconds as a float; raises ValueError saying what was expected.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {_DURATION_EXAMPLE}, got {describe(value)}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"expected {_DURATION_EXAMPLE}, got {describe(value)}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected {_DURATION_EXAMPLE}, got {describe(value)}")
    text = value.strip()
    if _PLAIN_NUMBER_RE.fullmatch(text):
        return float(text)
    if not _DURATION_RE.fullmatch(text):
        raise ValueError(
            f"expected {_DURATION_EXAMPLE} (units ms, s, m, h, d; a bare number means "
            f"seconds), got {describe(value)}"
        )
    seconds = 0.0
    last_rank = -1
    for number, unit in _PART_RE.findall(text):
        rank = _UNIT_ORDER.index(unit)
        if rank <= last_rank:
            # "30s1m" or "1m1m" is more likely a typo than a deliberate sum.
            raise ValueError(
                f"expected {_DURATION_EXAMPLE} with units from largest to smallest, "
                f"each once (like 1m30s), got {describe(value)}"
            )
        last_rank = rank
        seconds += float(number) * _UNIT_SECONDS[unit]
    return seconds


def parse_positive_duration(value: object) -> float:
    """Like parse_duration, but zero is refused: for timeouts and intervals."""
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"expected a duration above zero like 30s, got {describe(value)}")
    return seconds


def format_duration(seconds: float) -> str:
    """Spell seconds the way conveyor.yml does: 90 -> "1m30s", 0.5 -> "500ms"."""
    if seconds <= 0:
        return "0s"
    millis = round(seconds * 1000)
    parts: list[str] = []
    for unit in _UNIT_ORDER:
        size = round(_UNIT_SECONDS[unit] * 1000)
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def parse_percent(value: object) -> float:
    """Parse "1%", "0.5%" or "25%" into a fraction (0.01, 0.005, 0.25), 0% to 100%."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(
            f"expected a percentage with a % sign like 1% or 0.5%, got {describe(value)}"
        )
    match = _PERCENT_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"expected a percentage like 1% or 0.5%, got {describe(value)}")
    number = float(match.group(1))
    if number > 100:
        raise ValueError(f"expected a percentage between 0% and 100%, got {describe(value)}")
    return number / 100


def format_percent(fraction: float) -> str:
    """Spell a fraction as conveyor.yml does: 0.005 -> "0.5%"."""
    return f"{fraction * 100:.6g}%"


_DURATION_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": DURATION_PATTERN},
        {"type": "number", "minimum": 0},
    ],
    "description": "A duration: 500ms, 30s, 10m, 2h, 1d or a combination like 1m30s; "
    "a bare number means seconds.",
    "examples": ["30s", "10m", "1m30s"],
}

Duration = Annotated[
    float, BeforeValidator(parse_duration), WithJsonSchema(_DURATION_SCHEMA, mode="validation")
]
"""Seconds, written in conveyor.yml as "30s", "10m", "1m30s" or a bare number; zero allowed."""

PositiveDuration = Annotated[
    float,
    BeforeValidator(parse_positive_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN},
                {"type": "number", "exclusiveMinimum": 0},
            ],
            "description": str(_DURATION_SCHEMA["description"]) + " Above zero.",
            "examples": ["30s", "10m", "1m30s"],
        },
        mode="validation",
    ),
]
"""A Duration that must be above zero: timeouts, intervals."""

Percent = Annotated[
    float,
    BeforeValidator(parse_percent),
    PlainSerializer(format_percent, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": PERCENT_PATTERN,
            "description": "A percentage from 0% to 100%, like 1% or 0.5%.",
            "examples": ["1%", "0.5%"],
        },
        mode="validation",
    ),
]
"""A fraction from 0 to 1, written in conveyor.yml as a percentage: "1%" is 0.01."""
