"""Charts as inline SVG for the dashboard: no charting library, nothing to fetch.

The server may run without internet access, so the charts are drawn here as text: lines
of a few series over time (a canary against its baseline, with the judge's verdicts as
markers) and bars of values per period (the delivery metrics per week). Colours are left
to the page's stylesheet: every element has a class (`CHART_CSS` holds sensible rules),
none has a colour. An SVG has a viewBox and `width="100%"`, so it scales to the page, a
phone included; its sizes below are in viewBox units.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from conveyor.server.web.scales import clock, nice_ticks, number, time_ticks

__all__ = ["CHART_CSS", "Marker", "Series", "bar_chart", "line_chart"]

FONT = 12
CHAR = 0.6 * FONT  # the width of a glyph, roughly: only to lay out labels and legends
TOP = 32  # room for the title (and a bar's value above the highest tick)
BOTTOM = 40  # room for the x labels and the legend

Format = Callable[[float], str]
Ticks = Callable[[float, float], list[float]]


@dataclass(frozen=True)
class Series:
    """One line of a chart: (x, y) points in order of x; a y of None is a gap in the line."""

    name: str
    points: Sequence[tuple[float, float | None]]
    css: str  # its classes: the stylesheet gives it its colour ("canary rel-3", "baseline" …)


@dataclass(frozen=True)
class Marker:
    """A moment on a chart's x axis: a vertical line with its label as the tooltip."""

    x: float
    label: str
    kind: str  # pass | fail | inconclusive | deploy …: its class is marker-<kind>


# XML 1.0 allows no C0 control but tab and line breaks, even escaped
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NOT_CLASS = re.compile(r"[^A-Za-z0-9_-]+")


def _esc(text: str) -> str:
    """Text safe in SVG content and in attributes, whoever wrote it."""
    return html.escape(_CONTROL.sub("", text))


def _cls(name: str) -> str:
    """A CSS class from any text, so `marker-<kind>` stays one class."""
    return _NOT_CLASS.sub("-", name) or "none"


def _classes(names: str) -> str:
    """Classes from space-separated words, each made safe as `_cls` does."""
    return " ".join(_cls(w) for w in names.split()) or "none"


def _f(v: float) -> str:
    return f"{v:.1f}".removesuffix(".0")


def _text(x: float, y: float, text: str, css: str, anchor: str = "start") -> str:
    return f'<text class="{css}" x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}">{_esc(text)}</text>'


def _open(title: str, width: int, height: int) -> list[str]:
    label = _esc(title)
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
        f'role="img" aria-label="{label}" class="chart">',
        f"<title>{label}</title>",
        _text(0, 16, title, "chart-title"),
    ]


def _empty(title: str, width: int, height: int) -> str:
    parts = _open(title, width, height)
    parts.append(_text(width / 2, height / 2, "no data yet", "chart-empty", "middle"))
    return "\n".join([*parts, "</svg>"])


def _y_domain(values: Sequence[float], floor: float | None, ticks: Ticks) -> list[float]:
    """Nice ticks covering the values (and the floor, when there is one)."""
    lo, hi = min(values), max(values)
    if floor is not None:
        lo, hi = min(lo, floor), max(hi, floor)
    if lo == hi:  # one value, or all alike: make room around it
        pad = abs(lo) / 10 or 1.0
        lo, hi = (lo, hi + pad) if floor is not None and lo == floor else (lo - pad, hi + pad)
    return ticks(lo, hi)


class _Frame:
    """The plot area of a chart and the y axis drawn beside it."""

    def __init__(
        self, width: int, height: int, ticks: list[float], y_format: Format, y_label: str
    ) -> None:
        self.labels = [y_format(t) for t in ticks]
        self.ticks = ticks
        self.left = 8 + max(len(s) for s in self.labels) * CHAR + (FONT + 4 if y_label else 0)
        self.right, self.top, self.bottom = width - 12, TOP, height - BOTTOM
        self.width = width
        self.y_label = y_label

    def y(self, v: float) -> float:
        lo, hi = self.ticks[0], self.ticks[-1]
        return self.bottom - (v - lo) / (hi - lo) * (self.bottom - self.top)

    def x_label(self, x: float, label: str) -> str:
        """A label under the plot centred on x, moved in if it would overflow an edge."""
        half = len(label) * CHAR / 2
        x = min(max(x, half), self.width - half)
        return _text(x, self.bottom + 16, label, "tick-label", "middle")

    def y_axis(self) -> list[str]:
        out = ['<g class="axis y-axis">']
        for tick, label in zip(self.ticks, self.labels, strict=True):
            y = self.y(tick)
            out.append(
                f'<line class="grid" x1="{_f(self.left)}" x2="{_f(self.right)}" '
                f'y1="{_f(y)}" y2="{_f(y)}"/>'
            )
            out.append(_text(self.left - 4, y + FONT / 3, label, "tick-label", "end"))
        if self.y_label:
            x, y = FONT, (self.top + self.bottom) / 2
            out.append(
                f'<text class="axis-label" x="{_f(x)}" y="{_f(y)}" text-anchor="middle" '
                f'transform="rotate(-90 {_f(x)} {_f(y)})">{_esc(self.y_label)}</text>'
            )
        out.append(
            f'<line class="axis-line" x1="{_f(self.left)}" x2="{_f(self.right)}" '
            f'y1="{_f(self.bottom)}" y2="{_f(self.bottom)}"/>'
        )
        return [*out, "</g>"]


def _legend(items: Sequence[tuple[str, str]], y: float, x: float) -> list[str]:
    """Swatches and names, left to right: (class, name) each."""
    out = ['<g class="legend">']
    for css, name in items:
        out.append(
            f'<g class="legend-item {css}"><line class="swatch" x1="{_f(x)}" x2="{_f(x + 14)}" '
            f'y1="{_f(y - 4)}" y2="{_f(y - 4)}"/>{_text(x + 18, y, name, "legend-label")}</g>'
        )
        x += 18 + len(name) * CHAR + 14
    return [*out, "</g>"]


def _runs(points: Sequence[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """The unbroken runs of a series: a None (or a NaN, an infinity) ends one."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None or not math.isfinite(y) or not math.isfinite(x):
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((x, y))
    return [r for r in runs if r]


def _series(
    s: Series,
    rs: list[list[tuple[float, float]]],
    sx: Callable[[float], float],
    frame: _Frame,
    y_format: Format,
) -> list[str]:
    """A series' group: a polyline per unbroken run, a dot per lone point."""
    last = rs[-1][-1][1]
    title = f"<title>{_esc(s.name)}: {_esc(y_format(last))}</title>"
    parts = [f'<g class="series {_classes(s.css)}">{title}']
    for r in rs:
        coords = [(sx(x), frame.y(y)) for x, y in r]
        if len(r) == 1:
            [(cx, cy)] = coords
            parts.append(f'<circle class="dot" cx="{_f(cx)}" cy="{_f(cy)}" r="3"/>')
        else:
            points = " ".join(f"{_f(x)},{_f(y)}" for x, y in coords)
            parts.append(f'<polyline class="line" points="{points}"/>')
    parts.append("</g>")
    return parts


def _marker(m: Marker, sx: Callable[[float], float], frame: _Frame) -> str:
    """A marker: a vertical line across the plot at its x, with its label as a tooltip."""
    x = _f(sx(m.x))
    return (
        f'<g class="marker marker-{_cls(m.kind)}"><title>{_esc(m.label)}</title>'
        f'<line x1="{x}" x2="{x}" y1="{_f(frame.top)}" y2="{_f(frame.bottom)}"/>'
        f'<circle cx="{x}" cy="{_f(frame.top)}" r="4"/></g>'
    )


def _x_axis(
    frame: _Frame,
    sx: Callable[[float], float],
    ticks: list[float],
    x0: float,
    x1: float,
    x_format: Format,
) -> list[str]:
    """The x axis: a label at each tick between the ends."""
    parts = ['<g class="axis x-axis">']
    for tick in ticks:
        if x0 <= tick <= x1:  # nice_ticks would reach past the ends
            parts.append(frame.x_label(sx(tick), x_format(tick)))
    return [*parts, "</g>"]


def _legend_items(
    runs: Sequence[tuple[Series, list[list[tuple[float, float]]]]], markers: Sequence[Marker]
) -> list[tuple[str, str]]:
    """The legend: each series with a point, then each kind of marker once."""
    kinds = dict.fromkeys(_cls(m.kind) for m in markers)
    items = [(_classes(s.css), s.name) for s, rs in runs if rs]
    return items + [(f"marker-{kind}", kind) for kind in kinds]


def line_chart(
    title: str,
    series: Sequence[Series],
    *,
    markers: Sequence[Marker] = (),
    y_label: str = "",
    y_format: Format = number,
    x_format: Format = clock,
    x_ticks: Ticks = time_ticks,
    y_ticks: Ticks = nice_ticks,
    width: int = 640,
    height: int = 220,
    y_min: float | None = 0.0,
    y_max: float | None = None,
) -> str:
    """A line chart of the series as an `<svg>`; "no data yet" when there is no point.

    x is a unix time unless `x_format` and `x_ticks` say otherwise (`nice_ticks` suits
    plain numbers). The y axis starts at `y_min` (None: at the lowest value) and ends at
    the tick `y_ticks` puts at or above the highest value, or above `y_max` when that is
    higher: no error at all then reads 0 of 1%, not 0 of 100% (`duration_ticks` suits y
    in seconds). A lone point between gaps is drawn as a dot.
    """
    runs = [(s, _runs(s.points)) for s in series]
    values = [y for _, rs in runs for r in rs for _, y in r]
    if not values:
        return _empty(title, width, height)
    xs = [x for _, rs in runs for r in rs for x, _ in r]
    xs += [m.x for m in markers if math.isfinite(m.x)]
    reach = [y_max] if y_max is not None and math.isfinite(y_max) else []
    frame = _Frame(width, height, _y_domain(values + reach, y_min, y_ticks), y_format, y_label)
    x0, x1 = min(xs), max(xs)

    def sx(x: float) -> float:
        if x1 == x0:
            return (frame.left + frame.right) / 2
        return frame.left + (x - x0) / (x1 - x0) * (frame.right - frame.left)

    parts = _open(title, width, height) + frame.y_axis()
    parts += _x_axis(frame, sx, x_ticks(x0, x1), x0, x1, x_format)
    for s, rs in runs:
        if rs:
            parts += _series(s, rs, sx, frame, y_format)
    parts += [_marker(m, sx, frame) for m in markers if math.isfinite(m.x)]
    parts += _legend(_legend_items(runs, markers), height - 6, frame.left)
    return "\n".join([*parts, "</svg>"])


def bar_chart(
    title: str,
    bars: Sequence[tuple[str, float | None]],
    *,
    y_label: str = "",
    y_format: Format = number,
    y_ticks: Ticks = nice_ticks,
    css: str = "",
    width: int = 640,
    height: int = 220,
) -> str:
    """A bar chart of labelled values as an `<svg>` (a None is a period with no value).

    Bars rise from 0; each has its value as a tooltip, and above it when there is room.
    """
    values = [v for _, v in bars if v is not None and math.isfinite(v)]
    if not values:
        return _empty(title, width, height)
    frame = _Frame(width, height, _y_domain(values, 0.0, y_ticks), y_format, y_label)
    slot = (frame.right - frame.left) / len(bars)
    widest = max(len(label) for label, _ in bars) * CHAR + 6
    every = max(1, math.ceil(widest / slot))  # label only every n-th bar when crowded
    zero = frame.y(0.0)
    parts = _open(title, width, height) + frame.y_axis()
    for i, (label, value) in enumerate(bars):
        x = frame.left + i * slot
        middle = x + slot / 2
        if i % every == 0:
            parts.append(frame.x_label(middle, label))
        if value is None or not math.isfinite(value):
            parts.append(
                f'<g class="bar missing"><title>{_esc(label)}: no data</title>'
                f"{_text(middle, zero - 4, '–', 'bar-value', 'middle')}</g>"
            )
            continue
        shown = y_format(value)
        top, base = sorted((frame.y(value), zero))
        # the value above its bar when it fits in the bar's slot
        above = _text(middle, top - 4, shown, "bar-value", "middle")
        parts.append(
            f'<g class="{" ".join(["bar", *([_cls(css)] if css else [])])}">'
            f"<title>{_esc(label)}: {_esc(shown)}</title>"
            f'<rect x="{_f(x + slot * 0.15)}" y="{_f(top)}" width="{_f(slot * 0.7)}" '
            f'height="{_f(base - top)}"/>{above if len(shown) * CHAR + 4 <= slot else ""}</g>'
        )
    return "\n".join([*parts, "</svg>"])


CHART_CSS = """\
svg.chart { display: block; width: 100%; height: auto; max-width: 48rem; font-size: 12px; }
svg.chart text { fill: currentColor; }
svg.chart .chart-title { font-weight: bold; }
svg.chart .chart-empty, svg.chart .tick-label, svg.chart .axis-label { opacity: 0.7; }
svg.chart .grid { stroke: currentColor; stroke-opacity: 0.12; }
svg.chart .axis-line { stroke: currentColor; stroke-opacity: 0.5; }
svg.chart .series .line, svg.chart .swatch { fill: none; stroke: currentColor; stroke-width: 2; }
svg.chart .series .dot { fill: currentColor; }
svg.chart .canary { color: #d9480f; }
svg.chart .baseline { color: #1971c2; }
svg.chart .palette-1 { color: #1971c2; }
svg.chart .palette-2 { color: #d9480f; }
svg.chart .palette-3 { color: #2f9e44; }
svg.chart .palette-4 { color: #9c36b5; }
svg.chart .palette-5 { color: #e67700; }
svg.chart .palette-6 { color: #0c8599; }
svg.chart .marker line { stroke: currentColor; stroke-dasharray: 3 3; }
svg.chart .marker circle { fill: currentColor; }
svg.chart .marker-pass { color: #2f9e44; }
svg.chart .marker-fail { color: #e03131; }
svg.chart .marker-inconclusive { color: #868e96; }
svg.chart .marker-deploy { color: #7048e8; }
svg.chart .bar rect { fill: #1971c2; }
svg.chart .bar-value { font-size: 11px; }
"""
"""Rules for the classes the charts use; the page may restyle any of them."""
