"""The Delivery metrics page: the four DORA figures per environment, now and over time.

The figures now come from the function behind `GET /api/apps/{app}/dora`; the
charts from `dora_over_time`, which computes each period with the same `dora`
window, so a bar and the table can never tell different stories.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from conveyor.deploy.dora import PeriodDora, dora_over_time
from conveyor.deploy.history import deployment_records
from conveyor.protocol import DoraReport
from conveyor.server.api.deployments import _environments
from conveyor.server.api.dora import app_dora_report
from conveyor.server.deps import get_app_or_404
from conveyor.server.web.answers import refused
from conveyor.server.web.charts import Format, bar_chart
from conveyor.server.web.render import page
from conveyor.server.web.scales import (
    day,
    duration_ticks,
    nice_ticks,
    number,
    per_day,
    percent,
    seconds,
)
from conveyor.server.web.session import PageViewer
from conveyor.store.models import utcnow

router = APIRouter(include_in_schema=False)

PERIODS = {"week": (12, 7.0), "day": (14, 1.0)}  # how many periods of how many days


@dataclass(frozen=True)
class Metric:
    """One of the four figures: which field of a period it is and how to draw it."""

    title: str
    field: str
    css: str  # the bars' class: each figure its colour
    format: Format
    durations: bool = False


def metrics(period: str) -> list[Metric]:
    return [
        Metric(f"Deployments per {period}", "deployments", "m-frequency", number),
        Metric("Lead time (median)", "lead_time", "m-lead", seconds, durations=True),
        Metric("Change failure rate", "change_failure_rate", "m-failure", percent),
        Metric("Time to restore (median)", "time_to_restore", "m-restore", seconds, True),
    ]


def charts_of(environment: str, periods: list[PeriodDora], period: str) -> list[str]:
    """The four bar charts of one environment, a bar per period (None: nothing to measure)."""
    out = []
    for metric in metrics(period):
        bars: list[tuple[str, float | None]] = []
        for p in periods:
            figures = next((e for e in p.environments if e.environment == environment), None)
            value = getattr(figures, metric.field) if figures is not None else None
            bars.append((day(p.since.replace(tzinfo=UTC).timestamp()), _float(value)))
        out.append(
            bar_chart(
                metric.title,
                bars,
                y_format=metric.format,
                y_ticks=duration_ticks if metric.durations else nice_ticks,
                css=metric.css,
                width=400,
                height=200,
            )
        )
    return out


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


@dataclass(frozen=True)
class DeliveryView:
    app: str
    report: DoraReport
    period: str
    periods: list[PeriodDora]
    charts: dict[str, list[str]]  # by environment
    now: datetime


@router.get("/apps/{app}/delivery", response_class=HTMLResponse)
def delivery_page(
    request: Request,
    caller: PageViewer,
    app: str,
    period: Literal["week", "day"] = "week",
    days: float = Query(30, gt=0, le=3660),
) -> Response:
    count, period_days = PERIODS[period]
    try:
        with request.app.state.sessions() as session:
            report = app_dora_report(app, caller, session, None, days)
            row = get_app_or_404(session, app)
            records = deployment_records(session, row.id).get(app, [])
            names = _environments(row, session)
    except HTTPException as exc:
        return refused(request, caller, exc)
    now = utcnow()
    periods = dora_over_time(
        records, until=now, periods=count, period_days=period_days, environments=names
    )
    envs = [e.environment for e in report.environments]
    view = DeliveryView(
        app=app,
        report=report,
        period=period,
        periods=periods,
        charts={e: charts_of(e, periods, period) for e in envs},
        now=now,
    )
    return page(
        request,
        "delivery.html",
        caller=caller,
        title=f"Delivery · {app}",
        breadcrumbs=[("Apps", "/"), (app, f"/#app-{app}"), ("delivery metrics", None)],
        v=view,
        seconds=seconds,
        per_day=per_day,
        percent=percent,
    )


__all__ = ["charts_of", "router"]
