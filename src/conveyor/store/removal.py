"""Removing an app: what stands in its way, and deleting every record it leaves."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from conveyor.store.models import (
    App,
    CommitStatus,
    Deployment,
    DeploymentStep,
    Flag,
    FlagChange,
    FlagClient,
    FlagToken,
    Host,
    HostApp,
    LoadRecord,
    Notification,
    Provisioned,
    PullRequestRun,
    Release,
    ResolvedSecret,
    Run,
    Secret,
    Step,
    WebhookDelivery,
)

# deployment and run states in which something is being changed right now, or will be
_DEPLOYMENT_PENDING = ("queued", "waiting")
_DEPLOYMENT_ACTING = ("running", "rolling_back", "aborting")
_RUN_PENDING = ("queued",)
_RUN_ACTING = ("running",)


@dataclass
class Blockers:
    """What an app still does: deployments and runs underway or queued, hosts serving it."""

    acting: list[str] = field(default_factory=list)  # "deployment 12 (production, running)"
    pending: list[str] = field(default_factory=list)  # "run 7 (queued)"
    serving: list[str] = field(default_factory=list)  # host names


def refusal(app: str, blockers: Blockers, *, force: bool) -> str | None:
    """Why the app may not be removed now (None: it may).

    What is changing hosts right now (a running deployment or run) is never cut short:
    it must be aborted or end first. Queued work and hosts serving the app only need
    `force`; their records go and the hosts stop the app's instances.
    """
    if blockers.acting:
        return (
            f"app {app!r} cannot be removed while {', '.join(blockers.acting)} "
            f"is underway: abort it (`conveyor abort`) or wait for it to end, then retry"
        )
    if force:
        return None
    reasons = []
    if blockers.pending:
        reasons.append(f"{', '.join(blockers.pending)} waiting to start")
    if blockers.serving:
        reasons.append(f"it serves traffic on {', '.join(blockers.serving)}")
    if not reasons:
        return None
    return (
        f"app {app!r} was not removed: {'; '.join(reasons)}. "
        "`conveyor app remove --force` removes it anyway: queued work is dropped and "
        "every host stops its instances"
    )


def find_blockers(session: Session, app: App) -> Blockers:
    found = Blockers()
    deployments = session.scalars(
        select(Deployment)
        .where(
            Deployment.app_id == app.id,
            Deployment.state.in_(_DEPLOYMENT_PENDING + _DEPLOYMENT_ACTING),
        )
        .order_by(Deployment.id)
    ).all()
    for d in deployments:
        what = f"deployment {d.id} ({d.environment}, {d.state})"
        (found.acting if d.state in _DEPLOYMENT_ACTING else found.pending).append(what)
    runs = session.scalars(
        select(Run)
        .where(Run.app_id == app.id, Run.state.in_(_RUN_PENDING + _RUN_ACTING))
        .order_by(Run.id)
    ).all()
    for run in runs:
        what = f"run {run.id} ({run.state})"
        (found.acting if run.state in _RUN_ACTING else found.pending).append(what)
    rows = session.scalars(
        select(HostApp).join(Host).where(HostApp.app_id == app.id).order_by(Host.name)
    ).all()
    found.serving = [
        row.host.name
        for row in rows
        if row.host.state != "revoked" and any(r["weight"] > 0 for r in json.loads(row.releases))
    ]
    return found


@dataclass(frozen=True)
class Removed:
    """What removing an app left to do outside the database."""

    hosts: list[str]  # whose desired state changed: wake their agents
    runs: list[int]  # whose logs may go
    artifacts: set[str]  # sha256 of its releases' artifacts (others may share one)


def remove_app(session: Session, app: App) -> Removed:
    """Delete the app and every record of it; its hosts' desired states drop it.

    Not committed: the caller commits, then acts on what `Removed` lists.
    """
    hosts = session.scalars(
        select(Host).join(HostApp).where(HostApp.app_id == app.id).order_by(Host.name)
    ).all()
    for host in hosts:
        host.generation += 1  # the agent sees a new desired state, without the app
    runs = list(session.scalars(select(Run.id).where(Run.app_id == app.id)).all())
    artifacts = set(session.scalars(select(Release.sha256).where(Release.app_id == app.id)).all())
    deployments = select(Deployment.id).where(Deployment.app_id == app.id)
    # children first, in foreign key order: no database cascade is relied on
    for statement in (
        delete(HostApp).where(HostApp.app_id == app.id),
        delete(DeploymentStep).where(DeploymentStep.deployment_id.in_(deployments)),
        delete(Deployment).where(Deployment.app_id == app.id),
        delete(Notification).where(Notification.app_id == app.id),
        delete(WebhookDelivery).where(WebhookDelivery.app_id == app.id),
        delete(Release).where(Release.app_id == app.id),
        delete(Step).where(Step.run_id.in_(select(Run.id).where(Run.app_id == app.id))),
        delete(CommitStatus).where(
            CommitStatus.run_id.in_(select(Run.id).where(Run.app_id == app.id))
        ),
        delete(PullRequestRun).where(
            PullRequestRun.run_id.in_(select(Run.id).where(Run.app_id == app.id))
        ),
        delete(Run).where(Run.app_id == app.id),
        delete(Secret).where(Secret.app_id == app.id),
        delete(ResolvedSecret).where(ResolvedSecret.app_id == app.id),
        delete(FlagChange).where(
            FlagChange.flag_id.in_(select(Flag.id).where(Flag.app_id == app.id))
        ),
        delete(Flag).where(Flag.app_id == app.id),
        delete(FlagClient).where(
            FlagClient.token_id.in_(select(FlagToken.id).where(FlagToken.app_id == app.id))
        ),
        delete(FlagToken).where(FlagToken.app_id == app.id),
        delete(LoadRecord).where(LoadRecord.app_id == app.id),
        delete(Provisioned).where(Provisioned.app_id == app.id),
        delete(App).where(App.id == app.id),
    ):
        session.execute(statement.execution_options(synchronize_session=False))
    return Removed(hosts=[h.name for h in hosts], runs=runs, artifacts=artifacts)


def artifacts_in_use(session: Session, sha256s: set[str]) -> set[str]:
    """Of these artifacts, those another release still points to."""
    if not sha256s:
        return set()
    return set(session.scalars(select(Release.sha256).where(Release.sha256.in_(sha256s))).all())
