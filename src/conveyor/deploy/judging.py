"""The judge's records in a deployment step: its state carried across steps, chart points."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from conveyor.analysis.judge import JudgeState, Look
from conveyor.analysis.window import delta, error_rate, quantile
from conveyor.deploy.detail import SeriesStart, StepDetail, read_detail
from conveyor.protocol import ReleaseCounters, SeriesPoint, SeriesSide, StepSeries, TrafficWait
from conveyor.store.models import Deployment, DeploymentStep

SERIES_EVERY = 2.0  # seconds between two points of a step's chart series (at most)
SERIES_MAX = 1800  # points kept per step (an hour)


def series_point(detail: StepDetail, look: Look, verdict: str) -> dict[str, Any]:
    """Every SERIES_EVERY seconds, both releases' error rate and latencies over the step so
    far (as the judge counts them, so a chart's last point reads what its table says), with
    the judge's word then: the step's keys to write (`series`, `series_at`, `series_start`)."""
    start = detail.series_start
    points = detail.series
    soon = detail.series_at is not None and look.at - detail.series_at < SERIES_EVERY
    if soon and points[-1].verdict == verdict:
        return {}
    snapshot = SeriesStart(canary=look.canary, baseline=look.baseline)
    sides: dict[str, SeriesSide | None] = {}
    for name in ("canary", "baseline"):
        now: ReleaseCounters | None = getattr(look, name)
        before: ReleaseCounters | None = getattr(start, name) if start else None
        if now is None:
            sides[name] = None
            continue
        grown = delta(before or now, now)
        sides[name] = SeriesSide(
            requests=grown.requests,
            error_rate=error_rate(grown),
            p50=_finite(quantile(grown, 0.5)),
            p99=_finite(quantile(grown, 0.99)),
        )
    point = SeriesPoint.model_validate({"at": look.at, "verdict": verdict, **sides})
    out: dict[str, Any] = {"series": [*points, point][-SERIES_MAX:], "series_at": look.at}
    if start is None or (start.baseline is None and look.baseline is not None):
        # the first look (or the baseline's first): what the step's figures count from
        out["series_start"] = SeriesStart(
            canary=(start or snapshot).canary, baseline=snapshot.baseline
        )
    return out


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) else value


def carried_judge(d: Deployment, step: DeploymentStep) -> JudgeState | None:
    """The judge of the deployment's last judged step: its tests go on in the next one."""
    for earlier in sorted(d.steps, key=lambda s: s.position, reverse=True):
        if earlier.position >= step.position:
            continue
        found = read_detail(earlier).judge
        if found is not None:
            return found
    return None


def deployment_reference(d: Deployment) -> ReleaseCounters | None:
    """The previous release's counters when the deployment began (its first step's record):
    the judge's reference is what it served from then until the judge's first look."""
    for step in sorted(d.steps, key=lambda s: s.position):
        found = read_detail(step)
        if found.reference_at is not None:
            return found.reference
    return None


def reference_window(
    start: ReleaseCounters | None, baseline: ReleaseCounters | None
) -> ReleaseCounters | None:
    """What the baseline served between the deployment's start and now (None: unknown)."""
    if start is None or baseline is None:
        return None
    return delta(start, baseline)


def judged_series(d: Deployment) -> list[StepSeries]:
    """The chart points of the deployment's judged steps, in the order the steps run."""
    out = []
    for step in sorted(d.steps, key=lambda s: s.position):
        points = read_detail(step).series
        if not points:
            continue
        out.append(
            StepSeries(
                step=step.id,
                position=step.position,
                kind=step.kind,
                name=step.name,
                weight=step.weight,
                state=step.state,
                points=points,
            )
        )
    return out


def traffic_wait(detail: StepDetail, running: bool) -> TrafficWait | None:
    """A running canary step whose judge still lacks requests: how many it counted and
    needs, when the step gives up, and where to send traffic (from the step's detail)."""
    judgement = detail.judgement
    wait = detail.traffic_wait
    if not running or wait is None or judgement is None or judgement.verdict != "inconclusive":
        return None
    return TrafficWait(
        requests=judgement.requests,
        needed=wait.needed,
        until=datetime.fromtimestamp(wait.until, UTC),
        urls=list(wait.urls),
    )
