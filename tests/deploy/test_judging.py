"""Chart points of a judged step: one every few seconds, or when the verdict changes."""

from __future__ import annotations

from typing import Any

from conveyor.analysis.judge import Look
from conveyor.deploy.judging import SERIES_EVERY, series_point
from conveyor.protocol import ReleaseCounters


def look(at: float, canary: tuple[int, int], baseline: tuple[int, int] | None) -> Look:
    return Look(
        at=at,
        canary=ReleaseCounters(requests=canary[0], errors_5xx=canary[1]),
        baseline=ReleaseCounters(requests=baseline[0], errors_5xx=baseline[1])
        if baseline
        else None,
    )


def test_points_hold_each_interval_s_rates_and_the_verdict() -> None:
    detail: dict[str, Any] = {}
    detail.update(series_point(detail, look(0, (100, 1), (300, 3)), "inconclusive"))
    assert detail["series"][0]["canary"]["requests"] == 0  # the first look: nothing grew yet
    # too soon, same verdict: no point
    assert series_point(detail, look(1, (120, 1), (360, 3)), "inconclusive") == {}
    # a new verdict: a point at once
    detail.update(series_point(detail, look(2, (200, 11), (600, 3)), "fail"))
    last = detail["series"][-1]
    assert last["verdict"] == "fail"
    assert last["canary"] == {"requests": 100, "error_rate": 0.1, "p50": None, "p99": None}
    assert last["baseline"]["requests"] == 300 and last["baseline"]["error_rate"] == 0.0
    # the same verdict after SERIES_EVERY: a point; no baseline (a watch window): None
    detail.update(series_point(detail, look(2 + SERIES_EVERY, (300, 11), None), "fail"))
    assert detail["series"][-1]["baseline"] is None
    assert len(detail["series"]) == 3
