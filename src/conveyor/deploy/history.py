"""Reading the deployment history out of the store as plain records for the delivery metrics."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.deploy.dora import DeploymentRecord, EnvironmentDora, dora
from conveyor.store.models import App, Deployment, DeploymentStep, Release, Run, utcnow


def deployment_records(
    session: Session, app_id: int | None = None
) -> dict[str, list[DeploymentRecord]]:
    """Every deployment of one app (or of all), by app name, oldest first.

    The whole history is read, not only a window: the last success before a rollback may
    be old. Three flat queries, whatever the number of deployments.
    """
    steps = select(
        DeploymentStep.deployment_id,
        DeploymentStep.kind,
        DeploymentStep.state,
        DeploymentStep.finished_at,
    ).join(Deployment, DeploymentStep.deployment_id == Deployment.id)
    rows = (
        select(
            App.name,
            Deployment.id,
            Deployment.environment,
            Deployment.kind,
            Deployment.state,
            Deployment.created_at,
            Deployment.started_at,
            Deployment.finished_at,
            Run.committed_at,
            Run.created_at,
        )
        .join(App, Deployment.app_id == App.id)
        .join(Release, Deployment.release_id == Release.id)
        .outerjoin(Run, Release.run_id == Run.id)
        .order_by(Deployment.id)
    )
    if app_id is not None:
        steps = steps.where(Deployment.app_id == app_id)
        rows = rows.where(Deployment.app_id == app_id)
    failed_at: dict[int, datetime] = {}
    rollback: dict[int, str] = {}
    for deployment_id, kind, state, finished in session.execute(steps):
        if kind == "rollback":
            rollback[deployment_id] = state
        elif state == "failed" and finished is not None:
            failed_at[deployment_id] = max(finished, failed_at.get(deployment_id, finished))
    out: dict[str, list[DeploymentRecord]] = defaultdict(list)
    for (
        app,
        id_,
        env,
        kind,
        state,
        created,
        started,
        finished,
        committed,
        run_created,
    ) in session.execute(rows):
        out[app].append(
            DeploymentRecord(
                id=id_,
                environment=env,
                kind=kind,
                state=state,
                created_at=created,
                started_at=started,
                finished_at=finished,
                failed_at=failed_at.get(id_),
                rollback=rollback.get(id_),
                committed_at=committed,
                run_created_at=run_created,
            )
        )
    return dict(out)


def window(days: float, until: datetime | None = None) -> tuple[datetime, datetime]:
    """The last `days` days up to now (naive UTC, as the store keeps times)."""
    end = until or utcnow()
    return end - timedelta(days=days), end


def app_dora(
    session: Session, app: App, days: float, environments: list[str]
) -> tuple[datetime, datetime, list[EnvironmentDora]]:
    """One app's figures over the last `days` days, and the window they cover.

    One entry per environment: those named, then any other that saw a deployment.
    """
    since, until = window(days)
    records = deployment_records(session, app.id).get(app.name, [])
    return since, until, dora(records, since, until, environments)
