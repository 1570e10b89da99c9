"""The Canary analysis page: a deployment's steps and, for each judged step, its charts.

A canary step and the watch window are judged every second; the judge keeps a
chart point every 2 s, each release's figures over the step so far, as its table
counts them (`GET /api/deployments/{id}/series`, read here through the same
function). Each judged step gets charts of error rate, p50 and p99 over
time, canary against baseline, with a marker wherever the verdict changed, and
the table of its last judgement's evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from conveyor.deploy.records import ACTIVE
from conveyor.protocol import DeploymentOut, DeploymentStepOut, SeriesPoint, StepSeries
from conveyor.server.api.deployments import deployment_series, get_deployment
from conveyor.server.deps import RecordId
from conveyor.server.web import live
from conveyor.server.web.answers import refused
from conveyor.server.web.charts import Format, Marker, Series, line_chart
from conveyor.server.web.render import fragment, page
from conveyor.server.web.scales import clock, ms, number, percent, release_colours
from conveyor.server.web.session import PageViewer, WebCaller
from conveyor.store.models import utcnow

router = APIRouter(include_in_schema=False)

# what each chart plots of a point's side: title, field, format, and the least the y axis
# reaches (no error at all reads 0 of 1%, not 0 of 100%)
CHARTS: tuple[tuple[str, str, Format, float | None], ...] = (
    ("5xx error rate, step so far", "error_rate", percent, 0.01),
    ("p50 latency, step so far", "p50", ms, None),
    ("p99 latency, step so far", "p99", ms, None),
)
# the baseline first, so that the canary's line is drawn over it where they coincide
SIDES = ("baseline", "canary")


def verdict_markers(points: list[SeriesPoint]) -> list[Marker]:
    """A marker at the first point and wherever the judge's verdict changed."""
    out: list[Marker] = []
    last = None
    for p in points:
        if p.verdict != last:
            out.append(Marker(p.at, f"{p.verdict} from {clock(p.at)} UTC", p.verdict))
            last = p.verdict
    return out


def step_charts(
    series: StepSeries,
    releases: dict[str, str | None],
    colours: dict[str, str],
    *,
    which: tuple[str, ...] = ("error_rate", "p50", "p99"),
) -> list[str]:
    """Inline SVG charts of one judged step: canary against baseline, verdicts marked,
    each release in its colour (`releases`: the release of each side; `colours`: the
    class of each release, as the page's other figures have it)."""
    markers = verdict_markers(series.points)
    out = []
    for title, name, fmt, y_max in CHARTS:
        if name not in which:
            continue
        lines = [
            Series(
                side,
                [(p.at, _value(getattr(p, side), name)) for p in series.points],
                css=f"{side} {colours.get(releases.get(side) or '', '')}",
            )
            for side in SIDES
            if any(getattr(p, side) is not None for p in series.points)
        ]
        out.append(
            line_chart(
                title,
                lines,
                markers=markers,
                y_format=fmt,
                y_max=y_max,
                width=400,
                height=200,
            )
        )
    return out


def _value(side: object, name: str) -> float | None:
    if side is None:
        return None
    value = getattr(side, name)
    return float(value) if value is not None else None


def sides(d: DeploymentOut) -> dict[str, str | None]:
    """The release of each side of a deployment's charts."""
    baseline = d.previous_release if d.previous_release != d.release else None
    return {"canary": d.release, "baseline": baseline}


def side_colours(d: DeploymentOut) -> dict[str, str]:
    """The colour of each release of a deployment's charts (the baseline keeps its own)."""
    found = sides(d)
    return release_colours([found["baseline"], found["canary"]])


@dataclass(frozen=True)
class JudgedStep:
    """A judged step: its record (with the last judgement) and its charts."""

    step: DeploymentStepOut
    series: StepSeries
    charts: list[str]


@dataclass(frozen=True)
class AnalysisView:
    deployment: DeploymentOut
    judged: list[JudgedStep]
    live: bool
    now: datetime
    colours: dict[str, str]  # each release's colour class


def read_view(request: Request, caller: WebCaller, deployment_id: int) -> AnalysisView:
    with request.app.state.sessions() as session:
        d = get_deployment(deployment_id, caller, session)
        series = deployment_series(deployment_id, caller, session)
    steps = {s.id: s for s in d.steps}
    colours = side_colours(d)
    judged = [
        JudgedStep(steps[s.step], s, step_charts(s, sides(d), colours))
        for s in series
        if s.step in steps
    ]
    return AnalysisView(d, judged, live=d.state in ACTIVE, now=utcnow(), colours=colours)


def render(request: Request, caller: WebCaller, deployment_id: int) -> dict[str, str]:
    try:
        view = read_view(request, caller, deployment_id)
    except HTTPException as exc:
        return {"analysis": fragment("_flash.html", ok=False, message=exc.detail)}
    return {"analysis": fragment("_analysis.html", v=view, number=number)}


@router.get("/deployments/{deployment_id}", response_class=HTMLResponse)
def analysis_page(request: Request, caller: PageViewer, deployment_id: RecordId) -> Response:
    try:
        view = read_view(request, caller, deployment_id)
    except HTTPException as exc:
        return refused(request, caller, exc)
    d = view.deployment
    return page(
        request,
        "analysis.html",
        caller=caller,
        title=f"Deployment #{d.id} · {d.environment} · {d.app}",
        breadcrumbs=[
            ("Apps", "/"),
            (d.app, f"/#app-{d.app}"),
            (d.environment, f"/apps/{d.app}/environments/{d.environment}"),
            (f"deployment #{d.id}", None),
        ],
        v=view,
        analysis_html=fragment("_analysis.html", v=view, number=number),
    )


@router.get("/ui/deployments/{deployment_id}/events")
def analysis_events(request: Request, caller: PageViewer, deployment_id: RecordId) -> Response:
    return live.stream(request, lambda: render(request, caller, deployment_id))


__all__ = ["router", "side_colours", "sides", "step_charts", "verdict_markers"]
