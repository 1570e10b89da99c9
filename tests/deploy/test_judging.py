"""Chart points of a judged step: one every few seconds, or when the verdict changes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from conveyor.analysis.judge import Look
from conveyor.deploy.detail import StepDetail, dump_fields
from conveyor.deploy.judging import SERIES_EVERY, judged_series, series_point, traffic_wait
from conveyor.protocol import ReleaseCounters, SeriesSide
from conveyor.store.models import Deployment, DeploymentStep


def look(at: float, canary: tuple[int, int], baseline: tuple[int, int] | None) -> Look:
    return Look(
        at=at,
        canary=ReleaseCounters(requests=canary[0], errors_5xx=canary[1]),
        baseline=ReleaseCounters(requests=baseline[0], errors_5xx=baseline[1])
        if baseline
        else None,
    )


def test_points_hold_the_rates_of_the_step_so_far_and_the_verdict() -> None:
    detail = StepDetail()

    def then(at: float, canary: tuple[int, int], baseline: tuple[int, int] | None, v: str) -> None:
        nonlocal detail
        detail = detail.model_copy(update=series_point(detail, look(at, canary, baseline), v))

    then(0, (100, 1), (300, 3), "inconclusive")
    first = detail.series[0].canary
    assert first is not None and first.requests == 0  # the first look: nothing grew yet
    # too soon, same verdict: no point
    assert series_point(detail, look(1, (120, 1), (360, 3)), "inconclusive") == {}
    # a new verdict: a point at once
    then(2, (200, 11), (600, 3), "fail")
    last = detail.series[-1]
    assert last.verdict == "fail"
    assert last.canary == SeriesSide(requests=100, error_rate=0.1, p50=None, p99=None)
    assert last.baseline is not None
    assert last.baseline.requests == 300 and last.baseline.error_rate == 0.0
    # the same verdict after SERIES_EVERY: a point; no baseline (a watch window): None
    then(2 + SERIES_EVERY, (300, 11), None, "fail")
    assert detail.series[-1].baseline is None
    assert len(detail.series) == 3
    # counted from the step's first look, as the judge's table counts: not the last interval
    then(2 + 2 * SERIES_EVERY, (400, 11), (900, 3), "fail")
    canary = detail.series[-1].canary
    assert canary is not None and canary.requests == 300 and canary.error_rate == 10 / 300
    assert detail.series[-1].baseline == SeriesSide(
        requests=600, error_rate=0.0, p50=None, p99=None
    )
    # as written to the record: the same keys as ever
    written = dump_fields(**series_point(detail, look(99, (500, 11), None), "fail"))
    assert set(written) == {"series", "series_at"}
    assert set(written["series"][-1]) == {"at", "verdict", "canary", "baseline"}


def test_judged_series_lists_the_steps_with_points_in_their_order() -> None:
    detail = StepDetail()
    detail = detail.model_copy(
        update=series_point(detail, look(0, (100, 1), (300, 3)), "inconclusive")
    )
    detail = detail.model_copy(
        update=series_point(detail, look(SERIES_EVERY, (200, 1), (600, 3)), "pass")
    )

    def step(id_: int, position: int, kind: str, detail: StepDetail) -> DeploymentStep:
        return DeploymentStep(
            id=id_,
            position=position,
            kind=kind,
            name=kind,
            weight=50 if kind == "weight" else None,
            state="succeeded",
            detail=detail.model_dump_json(),
        )

    d = Deployment(
        steps=[
            step(3, 2, "monitor", StepDetail(series=detail.series[:1])),
            step(1, 0, "preview", StepDetail()),
            step(2, 1, "weight", detail),
        ]
    )
    found = judged_series(d)
    assert [(s.step, s.kind, len(s.points)) for s in found] == [(2, "weight", 2), (3, "monitor", 1)]
    second = found[0].points[1]
    assert second.verdict == "pass" and second.at == SERIES_EVERY
    assert second.canary is not None and second.canary.requests == 100
    assert second.baseline is not None and second.baseline.error_rate == 0.0


WAIT = {"needed": 100, "until": 1_800_000_030.0, "urls": ["http://10.0.0.1:8000"]}


@pytest.mark.parametrize(
    ("detail", "running", "expected"),
    [
        # the judge lacks requests: how many, until when, where to send traffic
        (
            {
                "judgement": {
                    "verdict": "inconclusive",
                    "requests": 12,
                    "error_rate": None,
                    "p99": None,
                },
                "traffic_wait": WAIT,
            },
            True,
            (12, 100, datetime(2027, 1, 15, 8, 0, 30, tzinfo=UTC), ["http://10.0.0.1:8000"]),
        ),
        # it has enough, or the step ended, or it was never judged: nothing to wait for
        (
            {
                "judgement": {"verdict": "pass", "requests": 120, "error_rate": None, "p99": None},
                "traffic_wait": WAIT,
            },
            True,
            None,
        ),
        (
            {
                "judgement": {
                    "verdict": "inconclusive",
                    "requests": 12,
                    "error_rate": None,
                    "p99": None,
                },
                "traffic_wait": WAIT,
            },
            False,
            None,
        ),
        (
            {
                "judgement": {
                    "verdict": "inconclusive",
                    "requests": 0,
                    "error_rate": None,
                    "p99": None,
                }
            },
            True,
            None,
        ),
        ({}, True, None),
    ],
)
def test_traffic_wait(
    detail: dict[str, Any], running: bool, expected: tuple[Any, ...] | None
) -> None:
    wait = traffic_wait(StepDetail.model_validate(detail), running)
    if expected is None:
        assert wait is None
    else:
        assert wait is not None
        assert (wait.requests, wait.needed, wait.until, wait.urls) == expected
