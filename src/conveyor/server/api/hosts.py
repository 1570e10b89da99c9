"""Hosts: register one (enrolment token), list with their state, revoke, set what they run."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, HTTPException, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.deploy.desired import (
    DesiredStateError,
    desired_state,
    host_app_releases,
    set_host_app,
)
from conveyor.protocol import (
    DesiredState,
    HostAppSet,
    HostCreate,
    HostCreated,
    HostOut,
    ObservedState,
    Placement,
)
from conveyor.server.auth import Admin, Deployer, Viewer, hash_token, new_token
from conveyor.server.deps import AppName, HostName, SessionDep, get_app_or_404
from conveyor.server.edge import responses
from conveyor.store.models import App, Host, HostApp, utcnow

router = APIRouter(prefix="/api/hosts", tags=["hosts"])
OFFLINE_AFTER = timedelta(seconds=15)


def host_out(host: Host) -> HostOut:
    online = (
        host.state == "enrolled"
        and host.last_seen is not None
        and utcnow() - host.last_seen < OFFLINE_AFTER
    )
    observed = ObservedState.model_validate_json(host.observed) if host.observed else None
    return HostOut(
        name=host.name,
        state=host.state,
        online=online,
        last_seen=host.last_seen,
        generation=host.generation,
        applied_generation=host.applied_generation,
        observed=observed,
    )


def get_host_or_404(session: SessionDep, name: str) -> Host:
    host = session.scalar(select(Host).where(Host.name == name))
    if host is None:
        raise HTTPException(404, f"unknown host {name!r}: see `conveyor host add`")
    return host


@router.get("")
def list_hosts(_: Viewer, session: SessionDep) -> list[HostOut]:
    return [host_out(h) for h in session.scalars(select(Host).order_by(Host.name)).all()]


@router.post("", status_code=201, responses=responses(409))
def add_host(body: HostCreate, request: Request, _: Admin, session: SessionDep) -> HostCreated:
    """Register a host; the enrolment token is shown once and works once."""
    host = session.scalar(select(Host).where(Host.name == body.name))
    if host is not None and host.state != "revoked":
        raise HTTPException(409, f"host {body.name!r} already exists")
    token = new_token()
    if host is None:
        host = Host(name=body.name)
        session.add(host)
    host.state = "pending"
    host.enrolment_hash = hash_token(token)
    host.agent_token_hash = None
    host.revoked_at = None
    session.commit()
    return HostCreated(
        **host_out(host).model_dump(),
        enrolment_token=token,
        server_fingerprint=request.app.state.settings.server_fingerprint,
    )


@router.get("/{name}", responses=responses(404))
def get_host(name: HostName, _: Viewer, session: SessionDep) -> HostOut:
    return host_out(get_host_or_404(session, name))


@router.delete("/{name}", responses=responses(404))
def remove_host(name: HostName, request: Request, _: Admin, session: SessionDep) -> HostOut:
    """Revoke a host: its agent credential stops working at once."""
    host = get_host_or_404(session, name)
    host.state = "revoked"
    host.agent_token_hash = None
    host.enrolment_hash = None
    host.revoked_at = utcnow()
    session.commit()
    request.app.state.notifier.changed(host.name)
    return host_out(host)


@router.get("/{name}/desired", responses=responses(404))
def get_desired(name: HostName, _: Viewer, session: SessionDep) -> DesiredState:
    state = desired_state(session, get_host_or_404(session, name))
    # secret values stay between the server and the agent
    for app in state.apps:
        for release in app.releases:
            release.service.env = {k: "***" for k in release.service.env}
    return state


@router.put("/{name}/apps/{app}", responses=responses(404, 409))
def set_host_app_route(
    name: HostName,
    app: AppName,
    body: HostAppSet,
    request: Request,
    _: Deployer,
    session: SessionDep,
) -> HostOut:
    """Set the releases and weights of an app on one host; the agent converges to it."""
    host = get_host_or_404(session, name)
    if host.state == "revoked":
        raise HTTPException(409, f"host {name!r} is revoked")
    try:
        set_host_app(session, host, get_app_or_404(session, app), body.releases, body.sticky)
    except DesiredStateError as exc:
        session.rollback()
        raise HTTPException(422, str(exc)) from None
    session.commit()
    request.app.state.notifier.changed(host.name)
    return host_out(host)


__all__ = ["host_out", "router"]


def placements(session: Session, app: App) -> list[Placement]:
    """Every host that runs the app: desired weights beside what its agent reports."""
    rows = session.scalars(
        select(HostApp).join(Host).where(HostApp.app_id == app.id).order_by(Host.name)
    ).all()
    found = []
    for row in rows:
        host = host_out(row.host)
        observed = next(
            (a for a in (host.observed.apps if host.observed else []) if a.app == app.name), None
        )
        found.append(
            Placement(
                host=host.name,
                online=host.online,
                converged=host.applied_generation == host.generation,
                desired=host_app_releases(row),
                observed=observed.releases if observed else [],
                error=observed.error if observed else None,
            )
        )
    return found
