"""Environments' status: each environment of an app, what it serves, on which hosts, its
active and last deployment, the holdback of its watch window and a pending contract.

`environment_status` is the one builder: the per-app route here and the batched
`/api/status` (status.py) both read through it.
"""

from __future__ import annotations

import json
import time

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.config.environment import Environment
from conveyor.deploy import contracting
from conveyor.deploy.gates import release_config
from conveyor.deploy.holdback import holdback_of
from conveyor.deploy.records import ACTIVE, PENDING, active_in, serving_release
from conveyor.protocol import EnvironmentStatus, PendingContract, Placement
from conveyor.server.api.deployments import deployment_out
from conveyor.server.api.hosts import placements
from conveyor.server.auth import Viewer
from conveyor.server.deps import AppName, SessionDep, get_app_or_404
from conveyor.server.edge import responses
from conveyor.store.models import App, Deployment, Release

router = APIRouter(prefix="/api", tags=["deployments"])


@router.get("/apps/{name}/environments", responses=responses(404))
def environments(name: AppName, _: Viewer, session: SessionDep) -> list[EnvironmentStatus]:
    app = get_app_or_404(session, name)
    return environment_statuses(session, app)


def environment_statuses(
    session: Session, app: App, everywhere: list[Placement] | None = None
) -> list[EnvironmentStatus]:
    """Each environment of the app's latest conveyor.yml; `everywhere`: its placements."""
    out = []
    release = session.scalar(
        select(Release).where(Release.app_id == app.id).order_by(Release.created_at.desc()).limit(1)
    )
    config = release_config(release) if release is not None and release.config else None
    everywhere = placements(session, app) if everywhere is None else everywhere
    for env_name, env in (config.environments if config else {}).items():
        out.append(
            environment_status(
                env_name,
                env,
                active_in(session, app.id, env_name),
                _last_ended(session, app.id, env_name),
                serving_release(session, app.id, env_name),
                everywhere,
                pending_contract(session, app, env_name),
            )
        )
    return out


def pending_contract(
    session: Session, app: App, env: str, serving: str | None = None
) -> PendingContract | None:
    """The environment's contract migration not applied yet, and why it waits."""
    due = contracting.pending(session, app, env, serving)
    if due is None:
        return None
    c = due.contract
    return PendingContract(release=c.release, command=c.command, waiting=due.waiting)


def environment_status(
    name: str,
    env: Environment,
    active: list[Deployment],
    last: Deployment | None,
    serving: str | None,
    everywhere: list[Placement],
    contract: PendingContract | None = None,
) -> EnvironmentStatus:
    """One environment's status from what was read of it: its active deployments (oldest
    first), its last ended one, the release it serves, and every placement of the app."""
    acting = next((d for d in active if d.state not in PENDING), None)
    current = acting or (active[0] if active else None)
    names = _host_names(env.hosts, current, last)
    return EnvironmentStatus(
        name=name,
        strategy=env.strategy,
        release=serving,
        hosts=[p for p in everywhere if names is not None and p.host in names],
        deployment=deployment_out(current, steps=True) if current else None,
        last=deployment_out(last) if last else None,
        holdback=holdback_of(acting, time.time()),
        contract=contract,
    )


def _last_ended(session: Session, app_id: int, env_name: str) -> Deployment | None:
    """The environment's latest deployment that is no longer active."""
    return session.scalar(
        select(Deployment)
        .where(
            Deployment.app_id == app_id,
            Deployment.environment == env_name,
            Deployment.state.not_in(ACTIVE),
        )
        .order_by(Deployment.id.desc())
        .limit(1)
    )


def _host_names(
    hosts: object, current: Deployment | None, last: Deployment | None
) -> set[str] | None:
    """The environment's hosts: its list, else those its current or last deployment had."""
    if isinstance(hosts, list):
        return set(hosts)
    for d in (current, last):
        if d is not None and d.previous:
            return set(json.loads(d.previous))
    return None
