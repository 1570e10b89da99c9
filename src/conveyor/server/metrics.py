"""`GET /metrics`: the server's figures in the Prometheus text format, read from the store.

A collector reads the database at every scrape, so the figures survive restarts, agree
across several servers sharing one database, and agree with the API (the DORA gauges
come from the same function as `GET /api/apps/{app}/dora`).

No token is asked, as with most exporters: the page holds counts and durations per app
and environment, no secret, no log line and no commit. Keep the server's port off the
open internet, or put the scrape behind the same proxy as the dashboard.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from conveyor.deploy.dora import dora
from conveyor.deploy.history import deployment_records, window
from conveyor.deploy.records import ENDED
from conveyor.pipeline.runs import FINISHED
from conveyor.store.models import App, Deployment, DeploymentStep, Run

router = APIRouter(tags=["health"])

# seconds: a switch takes about one, a canary with pauses tens of minutes
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
DORA_DAYS = 30.0

# the first that matches the start of a failed deployment's reason names its rollback's cause
# (reasons as deploy/orchestrator.py and server/api/deployments.py write them)
REASONS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("analysis", re.compile(r"analysis failed|not enough traffic to judge")),
    ("monitor", re.compile(r"monitor")),
    ("check", re.compile(r"check failed")),
    ("verify", re.compile(r"verify failed|the previous release \S+ failed the verify")),
    ("hook", re.compile(r"(hooks|migrations)\.\w+ failed")),
    (
        "host_offline",
        re.compile(r"host \S+ (lost its connection|is not connected|was removed)|host\(s\) not"),
    ),
    ("health", re.compile(r"release \S+ failed on|host\(s\) .* did not reach")),
    ("aborted", re.compile(r"aborted by")),
)


def rollback_reason(kind: str, reason: str | None) -> str:
    """A small category for a rollback: why traffic went back to the previous release."""
    if kind == "rollback":
        return "manual"
    text = (reason or "").lower()
    for category, pattern in REASONS:
        if pattern.match(text):
            return category
    return "other"


class StoreCollector(Collector):
    """Deployments, rollbacks, runs and the delivery metrics, counted in the database."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        with self.sessions() as session:
            yield from self._deployments(session)
            yield self._rollbacks(session)
            yield self._runs(session)
            yield from self._dora(session)

    def _deployments(self, session: Session) -> Iterator[Metric]:
        labels = ["app", "environment", "kind", "result"]
        total = CounterMetricFamily(
            "conveyor_deployments", "Deployments that ended, by result.", labels=labels
        )
        rows = session.execute(
            select(
                App.name,
                Deployment.environment,
                Deployment.kind,
                Deployment.state,
                func.count(),
            )
            .join(App, Deployment.app_id == App.id)
            .where(Deployment.state.in_(ENDED))
            .group_by(App.name, Deployment.environment, Deployment.kind, Deployment.state)
        )
        for app, env, kind, state, count in rows:
            total.add_metric([app, env, kind, state], count)
        yield total

        durations: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
        timed = session.execute(
            select(
                App.name,
                Deployment.environment,
                Deployment.kind,
                Deployment.state,
                Deployment.started_at,
                Deployment.finished_at,
            )
            .join(App, Deployment.app_id == App.id)
            .where(
                Deployment.state.in_(ENDED),
                Deployment.started_at.is_not(None),
                Deployment.finished_at.is_not(None),
            )
        )
        for app, env, kind, state, started, finished in timed:
            if started is None or finished is None:
                continue
            seconds = max(0.0, (finished - started).total_seconds())
            durations[(app, env, kind, state)].append(seconds)
        histogram = HistogramMetricFamily(
            "conveyor_deployment_duration_seconds",
            "How long deployments took from their start to their end, by result.",
            labels=labels,
        )
        for key, values in sorted(durations.items()):
            buckets = [(_le(b), sum(1 for v in values if v <= b)) for b in DURATION_BUCKETS]
            buckets.append(("+Inf", len(values)))
            histogram.add_metric(list(key), buckets, sum_value=sum(values))
        yield histogram

    def _rollbacks(self, session: Session) -> Metric:
        metric = CounterMetricFamily(
            "conveyor_rollbacks",
            "Times traffic went back to the previous release: a failed or aborted "
            "deployment's automatic rollback, or a rollback deployment (reason manual).",
            labels=["app", "environment", "reason"],
        )
        automatic = (
            select(App.name, Deployment.environment, Deployment.kind, Deployment.reason)
            .join(App, Deployment.app_id == App.id)
            .where(
                Deployment.state.in_(ENDED),
                Deployment.kind == "deploy",
                Deployment.id.in_(
                    select(DeploymentStep.deployment_id).where(DeploymentStep.kind == "rollback")
                ),
            )
        )
        manual = (
            select(App.name, Deployment.environment, Deployment.kind, Deployment.reason)
            .join(App, Deployment.app_id == App.id)
            .where(Deployment.kind == "rollback", Deployment.started_at.is_not(None))
        )
        counts: Counter[tuple[str, str, str]] = Counter()
        for query in (automatic, manual):
            for app, env, kind, reason in session.execute(query):
                counts[(app, env, rollback_reason(kind, reason))] += 1
        for (app, env, reason), count in sorted(counts.items()):
            metric.add_metric([app, env, reason], count)
        return metric

    def _runs(self, session: Session) -> Metric:
        metric = CounterMetricFamily(
            "conveyor_runs", "Runs (test, build) that ended, by result.", labels=["app", "result"]
        )
        rows = session.execute(
            select(App.name, Run.state, func.count())
            .join(App, Run.app_id == App.id)
            .where(Run.state.in_(FINISHED))
            .group_by(App.name, Run.state)
        )
        for app, state, count in rows:
            metric.add_metric([app, state], count)
        return metric

    def _dora(self, session: Session) -> Iterator[Metric]:
        labels = ["app", "environment"]
        days = f"over the last {DORA_DAYS:g} days"
        frequency = GaugeMetricFamily(
            "conveyor_dora_deployment_frequency_per_day",
            f"Successful deployments of a change per day, {days}.",
            labels=labels,
        )
        lead = GaugeMetricFamily(
            "conveyor_dora_lead_time_seconds",
            f"Median time from commit (or, unknown, from the run's start) to deployed, {days}.",
            labels=labels,
        )
        failure = GaugeMetricFamily(
            "conveyor_dora_change_failure_rate",
            f"Share of deployed changes that failed or were rolled back, {days}.",
            labels=labels,
        )
        restore = GaugeMetricFamily(
            "conveyor_dora_time_to_restore_seconds",
            f"Median time from a failed change to a healthy release serving again, {days}.",
            labels=labels,
        )
        since, until = window(DORA_DAYS)
        for app, records in sorted(deployment_records(session).items()):
            for env in dora(records, since, until):
                values = [
                    (frequency, env.deployment_frequency),
                    (lead, env.lead_time),
                    (failure, env.change_failure_rate),
                    (restore, env.time_to_restore),
                ]
                for family, value in values:
                    if value is not None:  # unknown: no sample rather than a made-up 0
                        family.add_metric([app, env.environment], value)
        yield from (frequency, lead, failure, restore)


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it (1.0, 2.5, +Inf)."""
    return repr(float(bound))


def registry(sessions: sessionmaker[Session]) -> CollectorRegistry:
    """The server's figures plus the process' own (memory, CPU, open files)."""
    found = CollectorRegistry(auto_describe=False)
    found.register(StoreCollector(sessions))
    ProcessCollector(registry=found)
    PlatformCollector(registry=found)
    return found


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus text format; read from the database at each scrape."""
    body = generate_latest(registry(request.app.state.sessions))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


__all__ = ["registry", "rollback_reason", "router"]
