"""The ticks and number formats of the dashboard's charts and tables.

Ticks are "nice numbers": multiples of 1, 2, 2.5 or 5 times a power of ten, so that a
reader can interpolate between them; on a time axis, multiples of a round span (15 s,
5 min, 6 h, 1 day) in UTC. The formatters keep labels short enough for a phone.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from datetime import UTC, datetime

__all__ = [
    "clock",
    "day",
    "duration_ticks",
    "ms",
    "nice_ticks",
    "number",
    "per_day",
    "percent",
    "release_colour",
    "release_colours",
    "seconds",
    "time_ticks",
]

MOST_TICKS = 5
_MANTISSAS = (1.0, 2.0, 2.5, 5.0)
_MINUTE, _HOUR, _DAY = 60, 3600, 86400
_TIME_STEPS = (
    *(1, 2, 5, 10, 15, 30),
    *(m * _MINUTE for m in (1, 2, 5, 10, 15, 30)),
    *(h * _HOUR for h in (1, 2, 3, 6, 12)),
    # each at most 2.5 times the one before, so that 5 ticks at most still make 3 at least
    *(d * _DAY for d in (1, 2, 5, 7, 14, 28, 56, 91, 182, 364)),
)


def nice_ticks(lo: float, hi: float) -> list[float]:
    """3 to 5 evenly spaced nice numbers, the first at or below `lo`, the last at or above `hi`.

    The step is the smallest nice number that needs no more than 5 ticks; as each nice
    number is at most 2.5 times the one before, the span then holds at least 3.
    """
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"ticks need finite lo < hi, got {lo} and {hi}")
    # one tick per 10^exp would be more than MOST_TICKS: start there and grow the step
    exp = math.floor(math.log10((hi - lo) / MOST_TICKS))
    while True:
        for mantissa in _MANTISSAS:
            step = mantissa * 10.0**exp
            # a tolerance so that a value on a tick (0.3 = 3 x 0.1) is not pushed past it
            first = math.floor(lo / step + 1e-9)
            last = math.ceil(hi / step - 1e-9)
            if last - first + 1 <= MOST_TICKS:
                digits = max(0, -exp + (mantissa == 2.5))
                return [round(k * step, digits) + 0.0 for k in range(first, last + 1)]
        exp += 1


def duration_ticks(lo: float, hi: float) -> list[float]:
    """Like `nice_ticks`, for durations in seconds: multiples of 15 s, 5 min, 6 h, 1 day …

    A span of a few seconds or less gets `nice_ticks` (0.25 s, 50 ms).
    """
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"ticks need finite lo < hi, got {lo} and {hi}")
    for step in _TIME_STEPS:
        first = math.floor(lo / step + 1e-9)
        last = math.ceil(hi / step - 1e-9)
        if last - first + 1 <= MOST_TICKS:
            if step == 1 and last - first + 1 < 3:
                break  # too short for whole seconds
            return [float(k * step) for k in range(first, last + 1)]
    return nice_ticks(lo, hi)


def time_ticks(lo: float, hi: float) -> list[float]:
    """Up to 5 round moments between two unix times (both included), at least 2 if any fit.

    The step is the smallest round span that needs no more than 5 ticks; a span shorter
    than a second gets its two ends.
    """
    if hi <= lo:
        return [lo]
    for step in _TIME_STEPS:
        first, last = math.ceil(lo / step), math.floor(hi / step)
        if last - first + 1 <= MOST_TICKS:  # counted before listed: a span may be years
            ticks = [float(k * step) for k in range(first, last + 1)]
            return ticks if len(ticks) >= 2 else [lo, hi]
    return [t for t in nice_ticks(lo, hi) if lo <= t <= hi]


def _significant(v: float, digits: int = 3) -> str:
    """v with at most `digits` significant digits, never in exponent form, no trailing 0."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(v))))
    text = f"{v:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def number(v: float) -> str:
    """A count or a rate in 3 significant digits: 0.25, 12.5, 2.5k, 1.2M; and in
    scientific notation far from 1 (a test's evidence can be 3.13e-20 or 4.1e+15)."""
    if v != 0 and math.isfinite(v) and not 1e-3 <= abs(v) < 1e12:
        return f"{v:.3g}"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= limit:
            return _significant(v / limit) + suffix
    return _significant(v)


def percent(v: float) -> str:
    """A fraction as a percentage: 0.025 is 2.5%."""
    return _significant(v * 100) + "%"


def ms(v: float) -> str:
    """A latency given in seconds, in milliseconds: 0.0123 is 12.3 ms."""
    return _significant(v * 1000) + " ms"


def seconds(v: float) -> str:
    """A duration given in seconds, in the unit that reads best: 45 s, 12 min, 3.5 h, 2 d."""
    for unit, size in (("d", _DAY), ("h", _HOUR), ("min", _MINUTE)):
        if abs(v) >= size:
            return f"{_significant(v / size, 2)} {unit}"
    return f"{_significant(v, 2)} s"


def per_day(v: float) -> str:
    """A frequency per day (deployments): 1.5/day."""
    return _significant(v) + "/day"


def clock(t: float) -> str:
    """The time of day of a unix time, in UTC: 14:03:20."""
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def day(t: float) -> str:
    """The day of a unix time, in UTC, whatever the locale: Mar 4."""
    d = datetime.fromtimestamp(t, UTC)
    return f"{_MONTHS[d.month - 1]} {d.day}"


PALETTE = 8  # colours of releases in conveyor.css: .rel-0 … .rel-7


def release_colour(release: str) -> str:
    """The CSS class of a release's colour: the same on every bar, swatch and chart line."""
    return f"rel-{_index(release)}"


def release_colours(releases: Iterable[str | None]) -> dict[str, str]:
    """Colours of releases shown together: each its own (`release_colour`) unless one
    listed before took it; then the next free one, so that two side by side never match."""
    out: dict[str, str] = {}
    for release in releases:
        if release is None or release in out:
            continue
        first = _index(release)
        taken = set(out.values())
        free = (f"rel-{(first + k) % PALETTE}" for k in range(PALETTE))
        out[release] = next((c for c in free if c not in taken), f"rel-{first}")
    return out


def _index(release: str) -> int:
    return hashlib.sha256(release.encode()).digest()[0] % PALETTE
