"""The four delivery (DORA) metrics of an app, per environment, over the last days."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query

from conveyor.deploy.history import app_dora
from conveyor.protocol import DoraEnvironment, DoraReport
from conveyor.server.api.deployments import _environments
from conveyor.server.auth import Viewer
from conveyor.server.deps import AppName, SessionDep, get_app_or_404
from conveyor.server.edge import responses

router = APIRouter(prefix="/api", tags=["deployments"])


@router.get("/apps/{name}/dora", responses=responses(404))
def app_dora_report(
    name: AppName,
    _: Viewer,
    session: SessionDep,
    environment: str | None = Query(None, max_length=100),
    days: float = Query(30, gt=0, le=3660, description="the window: this many days up to now"),
) -> DoraReport:
    """Deployment frequency, lead time, change failure rate and time to restore.

    One entry per environment: those of the app's newest conveyor.yml in promotion order,
    then any other that saw deployments; only `environment` when it is given.
    """
    app = get_app_or_404(session, name)
    since, until, figures = app_dora(session, app, days, _environments(app, session))
    if environment is not None:
        known = [f.environment for f in figures]
        figures = [f for f in figures if f.environment == environment]
        if not figures:
            raise HTTPException(
                404,
                f"unknown environment {environment!r} of {app.name} (known: "
                f"{', '.join(known) or 'none yet'})",
            )
    return DoraReport(
        app=app.name,
        since=since,
        until=until,
        days=days,
        environments=[DoraEnvironment.model_validate(f, from_attributes=True) for f in figures],
    )


__all__ = ["router"]
