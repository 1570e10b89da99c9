"""A canary in people's hands: promote a step now (or to 100%), pause it, resume it.

Each request is recorded in the step (who, when: its `control`, and a line in its
log); the engine honours it on its next look (deploy/control.py decides how).
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from sqlalchemy.orm import Session

from conveyor.deploy.control import ControlError, ask, said
from conveyor.deploy.detail import read_detail, write_detail
from conveyor.deploy.records import ACTING, active_in
from conveyor.protocol import DeploymentOut, StepControl
from conveyor.server.api.deployments import _check_environment, deployment_out
from conveyor.server.auth import Caller, Deployer
from conveyor.server.deps import AppName, EnvName, SessionDep, get_app_or_404
from conveyor.server.edge import responses
from conveyor.store.models import Deployment, DeploymentStep
from conveyor.store.steps import append_log

router = APIRouter(prefix="/api", tags=["deployments"])

VERBS = {"promote": "promote", "promote-full": "promote", "pause": "pause", "resume": "resume"}


def canary_step(d: Deployment) -> DeploymentStep | None:
    """The deployment's step underway (or next) if it is a canary step with a pause."""
    step = next((s for s in d.steps if s.state == "running"), None) or next(
        (s for s in d.steps if s.state == "pending"), None
    )
    if step is None or step.kind != "weight":
        return None
    return step if read_detail(step).options.pause > 0 else None


def control_step(session: Session, name: str, env: str, action: str, caller: Caller) -> Deployment:
    """Record a person's request on the running canary step of an environment."""
    verb = VERBS[action]
    app = get_app_or_404(session, name)
    _check_environment(app, env, session)
    d = next((d for d in active_in(session, app.id, env) if d.state in ACTING), None)
    if d is None:
        raise HTTPException(409, f"no deployment is running in {env} of {name}: nothing to {verb}")
    if d.state != "running":
        raise HTTPException(
            409, f"deployment #{d.id} to {env} is {d.state.replace('_', ' ')}: nothing to {verb}"
        )
    step = canary_step(d)
    if step is None:
        current = next((s.name for s in d.steps if s.state in ("running", "pending")), None)
        raise HTTPException(
            409,
            f"deployment #{d.id} to {env} is at {current!r}, not a canary step with a pause: "
            f"{verb} acts on a canary's traffic steps (try again when one starts; "
            "`conveyor abort --deployment` or `conveyor rollback` stop any deployment)",
        )
    detail = read_detail(step)
    before = detail.control or StepControl()
    try:
        after = ask(before, action, caller.name, time.time(), detail.watch_from)
    except ControlError as exc:
        raise HTTPException(409, f"deployment #{d.id}, step {step.name!r}: {exc}") from None
    write_detail(session, step.id, control=after)
    append_log(session, step.id, [said(after.actions[-1])])
    if after.full:
        for later in d.steps:
            if later.position > step.position and later.state == "pending" and _below_full(later):
                later.state = "skipped"
                later.reason = f"skipped: promoted to 100% by {caller.name}"
    session.commit()
    session.refresh(d)
    for s in d.steps:
        session.refresh(s)
    return d


def _below_full(step: DeploymentStep) -> bool:
    return step.kind == "weight" and step.weight is not None and step.weight < 100


@router.post("/apps/{name}/environments/{env}/promote", responses=responses(404, 409))
def promote(
    name: AppName,
    env: EnvName,
    request: Request,
    caller: Deployer,
    session: SessionDep,
    full: Annotated[
        bool, Query(description="to 100% now: the canary's later steps are skipped")
    ] = False,
) -> DeploymentOut:
    """End the canary step's pause now as passed (with `full`, go to 100% next)."""
    d = control_step(session, name, env, "promote-full" if full else "promote", caller)
    request.app.state.deployer.wake()
    return deployment_out(d, steps=True)


@router.post("/apps/{name}/environments/{env}/pause", responses=responses(404, 409))
def pause(
    name: AppName, env: EnvName, request: Request, caller: Deployer, session: SessionDep
) -> DeploymentOut:
    """Hold the canary step: its time stops, the judge still watches and rolls back."""
    d = control_step(session, name, env, "pause", caller)
    request.app.state.deployer.wake()
    return deployment_out(d, steps=True)


@router.post("/apps/{name}/environments/{env}/resume", responses=responses(404, 409))
def resume(
    name: AppName, env: EnvName, request: Request, caller: Deployer, session: SessionDep
) -> DeploymentOut:
    """Let a paused canary step go on with the time it had left."""
    d = control_step(session, name, env, "resume", caller)
    request.app.state.deployer.wake()
    return deployment_out(d, steps=True)
