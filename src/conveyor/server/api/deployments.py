"""Deployments: deploy and roll back an environment, approve, abort, read them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.deploy.control import left
from conveyor.deploy.detail import read_detail
from conveyor.deploy.gates import GateError, check_hard_gates, release_config
from conveyor.deploy.judging import judged_series, traffic_wait
from conveyor.deploy.records import (
    ACTIVE,
    PENDING,
    create_deployment,
    create_rollback,
    rollback_target,
)
from conveyor.protocol import (
    DeploymentOut,
    DeploymentState,
    DeploymentStepOut,
    DeployRequest,
    ReleaseWeight,
    RollbackRequest,
    StepControl,
    StepSeries,
)
from conveyor.server.auth import Caller, Deployer, Viewer, role_at_least
from conveyor.server.deps import (
    AppFilter,
    AppName,
    EnvName,
    RecordId,
    SessionDep,
    get_app_or_404,
    get_release_or_404,
    get_run_or_404,
)
from conveyor.server.edge import ErrorOut, responses
from conveyor.server.idempotency import IdempotencyKey, Once, answer_once
from conveyor.server.views import _duration
from conveyor.store.locking import lock_for_writing
from conveyor.store.models import App, Deployment, DeploymentStep, Release, Run, utcnow

router = APIRouter(prefix="/api", tags=["deployments"])


def step_out(step: DeploymentStep) -> DeploymentStepOut:
    targets = {
        h: [ReleaseWeight.model_validate(r) for r in items]
        for h, items in json.loads(step.targets).items()
    }
    detail = read_detail(step)
    control = detail.control
    pause = detail.options.pause or None
    remaining = None
    if pause is not None and step.state in ("pending", "running"):
        remaining = left(pause, detail.watch_from, control or StepControl(), time.time())
    return DeploymentStepOut(
        id=step.id,
        position=step.position,
        kind=step.kind,
        name=step.name,
        weight=step.weight,
        state=step.state,
        reason=step.reason,
        hosts=list(targets),
        targets=targets,
        judgement=detail.judgement,
        waiting_for_traffic=traffic_wait(detail, step.state == "running"),
        log=step.log,
        started_at=step.started_at,
        finished_at=step.finished_at,
        duration=_duration(step.started_at, step.finished_at),
        control=control,
        pause=pause,
        left=remaining,
        migration_hash=step.migration_hash,
    )


def deployment_out(d: Deployment, *, steps: bool = False) -> DeploymentOut:
    current = next((s for s in d.steps if s.state == "running"), None) or next(
        (s for s in d.steps if s.state == "pending"), None
    )
    hosts = list(json.loads(d.previous)) if d.previous else []
    return DeploymentOut(
        id=d.id,
        app=d.app.name,
        environment=d.environment,
        release=d.release_id,
        previous_release=d.previous_release,
        run=d.run_id,
        kind=d.kind,
        strategy=d.strategy,
        state=d.state,
        reason=d.reason,
        trigger=d.trigger,
        triggered_by=d.triggered_by,
        approved_by=d.approved_by,
        approved_at=d.approved_at,
        forced_by=d.forced_by,
        force_reason=d.force_reason,
        hosts=hosts,
        step=current.name if current is not None and d.state in ACTIVE else None,
        created_at=d.created_at,
        started_at=d.started_at,
        finished_at=d.finished_at,
        duration=_duration(d.started_at, d.finished_at),
        steps=[step_out(s) for s in d.steps] if steps else [],
    )


def get_deployment_or_404(session: Session, deployment_id: int) -> Deployment:
    d = session.get(Deployment, deployment_id)
    if d is None:
        raise HTTPException(404, f"unknown deployment {deployment_id}")
    return d


def _environments(app: App, session: Session) -> list[str]:
    """The app's environments as its newest release declares them."""
    release = session.scalar(
        select(Release).where(Release.app_id == app.id).order_by(Release.created_at.desc()).limit(1)
    )
    if release is None or not release.config:
        return []
    return list(release_config(release).environments)


def _check_environment(app: App, env: str, session: Session) -> None:
    known = _environments(app, session)
    if env not in known:
        raise HTTPException(
            404,
            f"unknown environment {env!r} of {app.name} (its conveyor.yml has: "
            f"{', '.join(known) or 'none'})",
        )


@router.post(
    "/apps/{name}/environments/{env}/deploy",
    status_code=201,
    responses={
        **responses(404),
        409: {
            "model": ErrorOut,
            "description": "refused: a gate, or the environment already has it",
        },
    },
)
def deploy(
    name: AppName,
    env: EnvName,
    body: DeployRequest,
    request: Request,
    caller: Deployer,
    session: SessionDep,
    idempotency_key: IdempotencyKey = None,
) -> DeploymentOut:
    """Deploy a release to an environment under every gate (default: the newest that passes).

    One deployment waits per environment: a newer release supersedes a queued older one;
    the same release queued or running, an older one, or a queued rollback: 409, saying which.
    """
    once = Once(request, caller, idempotency_key, body)
    once.recall(session)
    app = get_app_or_404(session, name)
    _check_environment(app, env, session)
    if body.force:
        if not role_at_least(caller.role, "admin"):
            raise HTTPException(403, "forcing a deployment outside its window needs an admin token")
        if not (body.reason or "").strip():
            raise HTTPException(422, "forcing a deployment needs a reason (--reason)")
    mirror = request.app.state.engine.paths.mirror(app.name)
    if body.release is not None:
        release = _release_or_commit(session, app, body.release)
    else:
        release = _newest_passing(session, app, env, mirror)

    def act() -> DeploymentOut:
        d = create_deployment(
            session,
            release,
            env,
            mirror=mirror,
            trigger="api",
            triggered_by=caller.name,
            forced_by=caller.name if body.force else None,
            force_reason=body.reason if body.force else None,
        )
        return deployment_out(d, steps=True)

    answer = answer_once(session, once, app.id, act, status=201)
    request.app.state.deployer.wake()
    return answer


def _release_or_commit(session: Session, app: App, name: str) -> Release:
    """A release by id, or by the commit it was built from (which says why there is none)."""
    release = session.get(Release, name)
    if release is not None and release.app_id == app.id:
        return release
    if len(name) >= 7 and all(c in "0123456789abcdef" for c in name.lower()):
        prefix = name.lower()
        built = session.scalar(
            select(Release)
            .where(Release.app_id == app.id, Release.sha.startswith(prefix))
            .order_by(Release.created_at.desc())
            .limit(1)
        )
        if built is not None:
            return built
        run = session.scalar(
            select(Run)
            .where(Run.app_id == app.id, Run.sha.startswith(prefix))
            .order_by(Run.id.desc())
            .limit(1)
        )
        if run is not None:
            why = run.reason or run.state
            raise HTTPException(
                409,
                f"commit {run.sha[:7]} has no release: run {run.id} {run.state} ({why}); "
                "only a release whose tests passed may be deployed",
            )
    raise HTTPException(404, f"unknown release {name!r} of app {app.name!r}")


def _newest_passing(session: Session, app: App, env: str, mirror: Path) -> Release:
    releases = session.scalars(
        select(Release)
        .where(Release.app_id == app.id)
        .order_by(Release.created_at.desc())
        .limit(50)
    ).all()
    if not releases:
        raise HTTPException(409, f"{app.name} has no release yet: `conveyor run {app.name}`")
    first_error = None
    for release in releases:
        try:
            check_hard_gates(session, release, env, mirror)
        except GateError as exc:
            first_error = first_error or str(exc)
            continue
        return release
    raise HTTPException(409, f"no release of {app.name} may go to {env}: {first_error}")


@router.post(
    "/apps/{name}/environments/{env}/rollback",
    status_code=201,
    responses={
        **responses(404),
        409: {
            "model": ErrorOut,
            "description": "refused: no release to go back to, or already going",
        },
    },
)
def rollback(
    name: AppName,
    env: EnvName,
    body: RollbackRequest,
    request: Request,
    caller: Deployer,
    session: SessionDep,
    idempotency_key: IdempotencyKey = None,
) -> DeploymentOut:
    """Back to the release served before (or the one named); aborts a deployment underway."""
    once = Once(request, caller, idempotency_key, body)
    once.recall(session)
    app = get_app_or_404(session, name)
    _check_environment(app, env, session)
    if body.to is not None:
        target = get_release_or_404(session, body.to)
        if target.app_id != app.id:
            raise HTTPException(404, f"unknown release {body.to!r} of app {app.name!r}")

    def act() -> DeploymentOut:
        # the default target is read under the write lock: what served before, now
        chosen = target if body.to is not None else rollback_target(session, app, env)
        return deployment_out(
            create_rollback(session, app, env, chosen, triggered_by=caller.name), steps=True
        )

    answer = answer_once(session, once, app.id, act, status=201)
    request.app.state.deployer.wake()
    return answer


@router.get("/deployments", responses=responses(404))
def list_deployments(
    _: Viewer,
    session: SessionDep,
    app: AppFilter = None,
    environment: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    state: DeploymentState | None = None,
    trigger: Annotated[
        str | None, Query(max_length=20, description="pipeline | api | rollback | contract")
    ] = None,
    kind: Literal["deploy", "rollback", "contract"] | None = None,
) -> list[DeploymentOut]:
    """Deployments, newest first, of an app, an environment, a result, a trigger, a kind.

    (Defaults are plain values, not `Query(...)`: the dashboard calls this function too.)
    """
    query = select(Deployment).order_by(Deployment.id.desc()).limit(limit)
    if app is not None:
        query = query.where(Deployment.app_id == get_app_or_404(session, app).id)
    if environment is not None:
        query = query.where(Deployment.environment == environment)
    if state is not None:
        query = query.where(Deployment.state == state)
    if trigger is not None:
        query = query.where(Deployment.trigger == trigger)
    if kind is not None:
        query = query.where(Deployment.kind == kind)
    return [deployment_out(d) for d in session.scalars(query).all()]


@router.get("/deployments/{deployment_id}", responses=responses(404))
def get_deployment(deployment_id: RecordId, _: Viewer, session: SessionDep) -> DeploymentOut:
    return deployment_out(get_deployment_or_404(session, deployment_id), steps=True)


@router.get("/deployments/{deployment_id}/series", responses=responses(404))
def deployment_series(deployment_id: RecordId, _: Viewer, session: SessionDep) -> list[StepSeries]:
    """Chart points of the judged steps: canary and baseline every 2 s (each over the step
    so far, as the judge counts), with the verdict."""
    return judged_series(get_deployment_or_404(session, deployment_id))


@router.post("/deployments/{deployment_id}/abort", responses=responses(404, 409))
def abort_deployment(
    deployment_id: RecordId, request: Request, caller: Deployer, session: SessionDep
) -> DeploymentOut:
    """Stop a deployment; what it changed goes back to the previous release."""
    d = get_deployment_or_404(session, deployment_id)
    lock_for_writing(session, d.app_id)  # its state as the engine left it, not a moment ago
    session.refresh(d)
    if not abort(d, caller):
        raise HTTPException(409, f"deployment {d.id} already ended ({d.state})")
    session.commit()
    request.app.state.deployer.wake()
    return deployment_out(d, steps=True)


def abort(d: Deployment, caller: Caller) -> bool:
    if d.state in PENDING:
        d.state = "cancelled"
        d.reason = f"aborted by {caller.name} before it started"
        d.finished_at = utcnow()
        return True
    if d.state == "running":
        d.state = "aborting"
        d.reason = f"aborted by {caller.name}"
        return True
    return d.state in ("aborting", "rolling_back")


@router.post(
    "/runs/{run_id}/approve",
    responses={
        **responses(404),
        409: {"model": ErrorOut, "description": "nothing of the run is waiting for approval"},
    },
)
def approve(
    run_id: RecordId,
    request: Request,
    caller: Deployer,
    session: SessionDep,
    idempotency_key: IdempotencyKey = None,
) -> list[DeploymentOut]:
    """Answer the approval gate of the run's release: who and when are recorded."""
    once = Once(request, caller, idempotency_key, None)
    once.recall(session)
    run = get_run_or_404(session, run_id)

    def act() -> list[DeploymentOut]:
        waiting = session.scalars(
            select(Deployment).where(
                Deployment.run_id == run.id,
                Deployment.state.in_(PENDING),
                Deployment.approved_by.is_(None),
            )
        ).all()
        needing = []
        for d in waiting:
            env = release_config(d.release).environments.get(d.environment)
            if env is not None and env.approval == "required":
                needing.append(d)
        if not needing:
            raise HTTPException(409, f"nothing of run {run_id} is waiting for approval")
        for d in needing:
            d.approved_by, d.approved_at = caller.name, utcnow()
        session.flush()
        return [deployment_out(d) for d in needing]

    answer = answer_once(session, once, run.app_id, act, status=200)
    request.app.state.deployer.wake()
    return answer


def run_deployments(session: Session, run_id: int) -> list[Deployment]:
    return list(
        session.scalars(
            select(Deployment)
            .where(Deployment.run_id == run_id, Deployment.state.in_(ACTIVE))
            .order_by(Deployment.id)
        ).all()
    )
