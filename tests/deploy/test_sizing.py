"""The watch window's holdback sized from the traffic when it begins (tables of cases)."""

from __future__ import annotations

import pytest

from conveyor.deploy.detail import StepDetail, StepOptions
from conveyor.deploy.ledger import dump_targets, load_targets
from conveyor.deploy.sizing import measured_rps, resized, size_window, sized_holdback
from conveyor.protocol import ReleaseWeight, SeriesPoint, SeriesSide
from conveyor.store.models import Deployment, DeploymentStep


def side(requests: int) -> SeriesSide:
    return SeriesSide(requests=requests, error_rate=0.0, p50=None, p99=None)


def point(at: float, canary: int | None, baseline: int | None) -> SeriesPoint:
    return SeriesPoint(
        at=at,
        verdict="pass",
        canary=None if canary is None else side(canary),
        baseline=None if baseline is None else side(baseline),
    )


@pytest.mark.parametrize(
    ("case", "points", "rps"),
    [
        ("two minutes at 200 req/s", [point(0, 0, 0), point(120, 2400, 21600)], 200.0),
        ("counted from the first point", [point(10, 100, 900), point(30, 300, 2700)], 100.0),
        # the baseline's first counts came later: from the first point with both
        ("a side missing at first", [point(0, 5, None), point(5, 10, 90), point(25, 30, 270)], 10),
        ("too short a chart", [point(0, 0, 0), point(5, 100, 900)], None),
        ("one point", [point(0, 0, 0)], None),
        ("none", [], None),
    ],
)
def test_traffic_is_measured_over_a_judged_steps_chart(
    case: str, points: list[SeriesPoint], rps: float | None
) -> None:
    assert measured_rps(points) == (None if rps is None else pytest.approx(rps)), case


@pytest.mark.parametrize(
    ("case", "rps", "least", "most", "share"),
    [
        ("200 req/s: 60 of them is 30%, at most 20%", 200.0, 5, 20, 20),
        ("400 req/s: 15%", 400.0, 5, 20, 15),
        ("500 req/s: 12%", 500.0, 5, 20, 12),
        ("700 req/s: 8.6% rounds up", 700.0, 5, 20, 9),
        ("1,200 req/s: 5% is enough", 1200.0, 5, 20, 5),
        ("10,000 req/s: never below holdback", 10_000.0, 5, 20, 5),
        ("unmeasured: the most", None, 5, 20, 20),
        ("no traffic: the most", 0.0, 5, 20, 20),
        ("holdback_max at most holdback: as written", 200.0, 5, 5, 5),
        ("a larger holdback written stays", 200.0, 30, 20, 30),
    ],
)
def test_the_holdback_gives_the_previous_release_60_requests_a_second_within_its_bounds(
    case: str, rps: float | None, least: int, most: int, share: int
) -> None:
    assert sized_holdback(rps, least, most) == share, case


def rw(**weights: int) -> list[ReleaseWeight]:
    return [ReleaseWeight(release=r, weight=w) for r, w in weights.items()]


@pytest.mark.parametrize(
    ("case", "targets", "expected"),
    [
        ("a split host", {"a": rw(old=5, new=95)}, {"a": rw(old=20, new=80)}),
        ("the new release alone", {"a": rw(new=100)}, {"a": rw(new=100)}),
        (
            "hosts of both kinds",
            {"a": rw(new=95, old=5), "b": rw(new=100)},
            {"a": rw(new=80, old=20), "b": rw(new=100)},
        ),
    ],
)
def test_resized_targets_keep_the_new_release_beside_the_holdback(
    case: str, targets: dict[str, list[ReleaseWeight]], expected: dict[str, list[ReleaseWeight]]
) -> None:
    assert resized(targets, "new", 20) == expected, case


def step(position: int, kind: str, weight: int | None, detail: StepDetail) -> DeploymentStep:
    return DeploymentStep(
        id=position + 1,
        position=position,
        kind=kind,
        name=f"watch new for 600 s, {100 - (weight or 100)}% held back on the previous release",
        weight=weight,
        state="pending",
        targets=dump_targets({"a": rw(old=100 - (weight or 100), new=weight or 100)}),
        detail=detail.model_dump_json(),
    )


CANARY = StepDetail(series=[point(0, 0, 0), point(120, 12_000, 12_000)])  # 200 req/s
WINDOW = StepDetail(options=StepOptions(pause=600, analyse=True, holdback_max=20))


@pytest.mark.parametrize(
    ("case", "before", "window", "weight", "said"),
    [
        ("200 req/s measured: raised to 20%", [CANARY], WINDOW, 80, "from 5% to 20% (200 req/s"),
        ("no step measured: the most", [], WINDOW, 80, "from 5% to 20% (no traffic measured"),
        (
            "planned before sizing was (no holdback_max): as planned",
            [CANARY],
            StepDetail(options=StepOptions(pause=600, analyse=True)),
            95,
            None,
        ),
        (
            "at most 5%: as written",
            [CANARY],
            StepDetail(options=StepOptions(pause=600, holdback_max=5)),
            95,
            None,
        ),
    ],
)
def test_a_window_beginning_has_its_holdback_sized_on_its_record(
    case: str, before: list[StepDetail], window: StepDetail, weight: int, said: str | None
) -> None:
    steps = [step(i, "weight", 50, d) for i, d in enumerate(before)]
    monitor = step(len(steps), "monitor", 95, window)
    d = Deployment(release_id="new", previous_release="old", steps=[*steps, monitor])
    line = size_window(d, monitor)
    assert monitor.weight == weight, case
    assert load_targets(monitor.targets)["a"] == rw(old=100 - weight, new=weight), case
    if said is None:
        assert line is None, case
        assert "5% held back on the previous release" in monitor.name
    else:
        assert line is not None and said in line, (case, line)
        assert f"{100 - weight}% held back on the previous release" in monitor.name
        assert ("sized to 200 req/s" in monitor.name) == bool(before), monitor.name
