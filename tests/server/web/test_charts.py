"""The charts are well-formed SVG that draw every point, gap, marker and bar, escaped."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from itertools import pairwise

import pytest

from conveyor.server.web.charts import CHART_CSS, Marker, Series, bar_chart, line_chart
from conveyor.server.web.scales import duration_ticks, nice_ticks, percent, seconds

NS = "{http://www.w3.org/2000/svg}"
T = 1_700_000_000.0  # 22:13:20 UTC
HOSTILE = "<script>alert('x')</script> & \"quoted\"\x1b[31m"


def svg(text: str) -> ET.Element:
    root = ET.fromstring(text)  # well-formed, or this raises
    assert root.tag == f"{NS}svg"
    return root


def every(root: ET.Element, tag: str) -> list[ET.Element]:
    return list(root.iter(f"{NS}{tag}"))


def classes(e: ET.Element) -> set[str]:
    return set(e.get("class", "").split())


def coords(polyline: ET.Element) -> list[tuple[float, float]]:
    pairs = (p.split(",") for p in polyline.get("points", "").split())
    return [(float(x), float(y)) for x, y in pairs]


def tick_labels(root: ET.Element, axis: str) -> list[str]:
    [group] = [g for g in every(root, "g") if f"{axis}-axis" in classes(g)]
    return [t.text or "" for t in every(group, "text") if "tick-label" in classes(t)]


def series(*ys: float | None, name: str = "canary", css: str = "canary") -> Series:
    return Series(name, [(T + 5 * i, y) for i, y in enumerate(ys)], css)


def test_a_line_chart_is_a_responsive_labelled_svg() -> None:
    root = svg(line_chart("Error rate", [series(1, 2, 3)]))
    assert root.get("viewBox") == "0 0 640 220"
    assert root.get("width") == "100%" and root.get("height") is None
    assert (root.get("role"), root.get("aria-label")) == ("img", "Error rate")
    assert classes(root) == {"chart"}
    [title] = root.findall(f"{NS}title")
    assert title.text == "Error rate"


N = None
GAPS: list[tuple[str, list[float | None], list[int], int]] = [
    # (name, ys, points per polyline, lone dots)
    ("no gap", [1, 2, 3, 4], [4], 0),
    ("one gap", [1, 2, N, 3, 4, 5], [2, 3], 0),
    ("gaps at the ends and doubled", [N, 1, 2, N, N, 3, 4, 5, N], [2, 3], 0),
    ("a lone point between gaps is a dot", [1, N, 2, 3], [2], 1),
    ("a single point is a dot", [7], [], 1),
    ("NaN and infinity are gaps", [1, math.nan, 2, math.inf, 3, 4], [2], 2),
]


@pytest.mark.parametrize(("name", "ys", "lengths", "dots"), GAPS, ids=[g[0] for g in GAPS])
def test_series_split_at_gaps(
    name: str, ys: list[float | None], lengths: list[int], dots: int
) -> None:
    root = svg(line_chart("t", [series(*ys)]))
    [group] = [g for g in every(root, "g") if "series" in classes(g)]
    assert classes(group) == {"series", "canary"}
    assert [len(coords(p)) for p in every(group, "polyline")] == lengths
    assert len(every(group, "circle")) == dots


def test_points_lie_inside_the_plot_and_keep_their_order() -> None:
    root = svg(line_chart("t", [series(0.5, 3.2, 1, 8.7)], width=390, height=200))
    [line] = every(root, "polyline")
    points = coords(line)
    assert all(0 < x < 390 and 0 < y < 200 for x, y in points)
    xs = [x for x, _ in points]
    assert xs == sorted(xs) and len(set(xs)) == 4
    # higher values are higher up (smaller y); 8.7 is the highest
    assert min(points, key=lambda p: p[1]) == points[3]


def test_series_on_the_same_scale() -> None:
    root = svg(line_chart("t", [series(1, 1), series(2, 2, name="b", css="baseline")]))
    [one, two] = [coords(p) for p in every(root, "polyline")]
    bottom = max(float(g.get("y1", 0)) for g in every(root, "line") if "grid" in classes(g))
    # y=0 is at the bottom, y=2 twice as far up from it as y=1
    assert math.isclose(bottom - two[0][1], 2 * (bottom - one[0][1]), rel_tol=0.01)


@pytest.mark.parametrize(
    ("ys", "y_min", "lowest", "highest"),
    [
        ([0.012, 0.031, 0.02], 0.0, 0.0, 0.031),
        ([120.0, 180.0], 0.0, 0.0, 180.0),
        ([120.0, 180.0], None, 120.0, 180.0),  # from the data, not from 0
        ([-3.0, 4.0], 0.0, -3.0, 4.0),  # a floor never hides a value below it
        ([0.0, 0.0], 0.0, 0.0, 0.0),  # all zero: still a scale
        ([5.0], None, 5.0, 5.0),  # one value, no floor
    ],
)
def test_y_ticks_are_3_to_5_nice_numbers_covering_the_values(
    ys: list[float], y_min: float | None, lowest: float, highest: float
) -> None:
    root = svg(line_chart("t", [series(*ys)], y_min=y_min, y_format=repr))
    ticks = [float(t) for t in tick_labels(root, "y")]
    assert 3 <= len(ticks) <= 5
    assert ticks[0] <= lowest and ticks[-1] >= highest
    if y_min is not None:
        assert ticks[0] <= y_min
    else:
        assert ticks[0] > 0  # no 0 forced in
    step = ticks[1] - ticks[0]
    assert all(math.isclose(b - a, step) for a, b in pairwise(ticks))
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert any(math.isclose(mantissa, m) for m in (1, 2, 2.5, 5))


def test_y_labels_use_the_format() -> None:
    root = svg(line_chart("t", [series(0.01, 0.04)], y_format=percent, y_label="errors"))
    assert tick_labels(root, "y") == ["0%", "1%", "2%", "3%", "4%"]
    assert "errors" in [t.text for t in every(root, "text")]


def test_y_ticks_of_durations_are_round_spans() -> None:
    lead_times = series(5400, 7200, 12600, name="production", css="palette-1")
    root = svg(line_chart("Lead time", [lead_times], y_format=seconds, y_ticks=duration_ticks))
    assert tick_labels(root, "y") == ["0 s", "1 h", "2 h", "3 h", "4 h"]
    bars = svg(
        bar_chart("t", [("w1", 90.0), ("w2", 1860.0)], y_format=seconds, y_ticks=duration_ticks)
    )
    assert tick_labels(bars, "y") == ["0 s", "10 min", "20 min", "30 min", "40 min"]


def test_x_labels_are_times_of_day_in_utc() -> None:
    root = svg(line_chart("t", [Series("a", [(T, 1), (T + 60, 2)], "a")]))
    # 22:13:20 to 22:14:20: every 15 s (every 10 s would be 6 ticks)
    assert tick_labels(root, "x") == ["22:13:30", "22:13:45", "22:14:00", "22:14:15"]


def test_x_labels_of_plain_numbers_stay_within_the_data() -> None:
    points = [(3.0, 1.0), (97.0, 2.0)]
    root = svg(line_chart("t", [Series("a", points, "a")], x_format=repr, x_ticks=nice_ticks))
    assert tick_labels(root, "x") == ["25.0", "50.0", "75.0"]  # not 0 and 100


def test_a_hostile_name_is_escaped_everywhere() -> None:
    text = line_chart(
        HOSTILE,
        [series(1, 2, name=HOSTILE, css=HOSTILE)],
        markers=[Marker(T + 5, HOSTILE, HOSTILE)],
        y_label=HOSTILE,
    )
    assert "<script" not in text and "\x1b" not in text
    root = svg(text)
    shown = HOSTILE.replace("\x1b", "")
    assert root.get("aria-label") == shown
    assert f"{shown}: 2" in [t.text for t in every(root, "title")]
    assert shown in [t.text for t in every(root, "text")]  # the legend
    for e in root.iter():
        assert all(re.fullmatch(r"[\w-]+", c) for c in classes(e)), e.get("class")


def test_markers_have_their_label_as_title_and_their_kind_as_class() -> None:
    markers = [
        Marker(T + 5, "pass: error rate 0.1% vs 0.2%", "pass"),
        Marker(T + 10, "fail: p99 +40%", "fail"),
        Marker(T + 20, "deployed r7", "deploy"),
    ]
    root = svg(line_chart("t", [series(1, 2, 3)], markers=markers))
    found = [g for g in every(root, "g") if "marker" in classes(g)]
    assert [classes(g) - {"marker"} for g in found] == [
        {"marker-pass"},
        {"marker-fail"},
        {"marker-deploy"},
    ]
    assert [g.findtext(f"{NS}title") for g in found] == [m.label for m in markers]
    xs = [float(line.get("x1", 0)) for g in found for line in g.findall(f"{NS}line")]
    [line] = every(root, "polyline")
    assert xs[:2] == [x for x, _ in coords(line)][1:]  # on the points at the same moments
    assert xs[2] > xs[1]  # a marker past the data widens the x axis


def test_the_legend_names_every_series_and_marker_kind() -> None:
    root = svg(
        line_chart(
            "t",
            [series(1, 2), series(3, 4, name="baseline r6", css="baseline"), series(N, name="x")],
            markers=[Marker(T, "a", "fail"), Marker(T + 1, "b", "fail")],
        )
    )
    [legend] = [g for g in every(root, "g") if "legend" in classes(g)]
    items = [g for g in every(legend, "g") if "legend-item" in classes(g)]
    assert [g.findtext(f"{NS}text") for g in items] == ["canary", "baseline r6", "fail"]
    assert [classes(g) - {"legend-item"} for g in items] == [
        {"canary"},
        {"baseline"},
        {"marker-fail"},
    ]


@pytest.mark.parametrize(
    "chart",
    [
        line_chart("Latency", []),
        line_chart("Latency", [series(N, N)]),
        line_chart("Latency", [Series("a", [], "a")], markers=[Marker(T, "m", "pass")]),
        bar_chart("Deployments", []),
        bar_chart("Deployments", [("w1", None), ("w2", math.nan)]),
    ],
)
def test_no_data_says_so(chart: str) -> None:
    root = svg(chart)
    assert [t.text for t in every(root, "text")] == [root.get("aria-label"), "no data yet"]
    assert not every(root, "polyline") and not every(root, "rect")


def test_bars_rise_from_zero_in_proportion() -> None:
    root = svg(bar_chart("Deployments per day", [("Mar 4", 1.0), ("Mar 11", 2.0), ("Mar 18", 0)]))
    rects = every(root, "rect")
    heights = [float(r.get("height", 0)) for r in rects]
    bottoms = {round(float(r.get("y", 0)) + h, 1) for r, h in zip(rects, heights, strict=True)}
    assert len(bottoms) == 1
    assert math.isclose(heights[1], 2 * heights[0], rel_tol=0.01) and heights[2] == 0
    titles = [t.text for t in every(root, "title")][1:]
    assert titles == ["Mar 4: 1", "Mar 11: 2", "Mar 18: 0"]
    assert tick_labels_of_bars(root) == ["Mar 4", "Mar 11", "Mar 18"]


def tick_labels_of_bars(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.findall(f"{NS}text") if "tick-label" in classes(t)]


def test_a_missing_bar_is_a_dash_with_a_tooltip() -> None:
    root = svg(bar_chart("t", [("w1", 0.5), ("w2", None), ("w3", 0.25)], y_format=percent))
    groups = [g for g in every(root, "g") if "bar" in classes(g)]
    assert [g.findtext(f"{NS}title") for g in groups] == ["w1: 50%", "w2: no data", "w3: 25%"]
    assert "missing" in classes(groups[1]) and groups[1].find(f"{NS}rect") is None
    assert len(every(root, "rect")) == 2


def test_many_bars_label_only_some_and_escape_theirs() -> None:
    bars = [(f"<w{i}>", float(i)) for i in range(52)]
    text = bar_chart("a year", bars, css=HOSTILE)
    assert "<w1>" not in text
    root = svg(text)
    labels = tick_labels_of_bars(root)
    assert labels[0] == "<w0>" and 5 < len(labels) < 52
    assert len(every(root, "rect")) == 52


def test_the_css_styles_the_classes_used() -> None:
    for name in ("chart", "series", "line", "dot", "marker-pass", "marker-fail", "bar", "grid"):
        assert f".{name}" in CHART_CSS
