"""What runs where: per app, the runs underway, the last run and the last release."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from conveyor.pipeline.runs import ACTIVE
from conveyor.protocol import AppStatus
from conveyor.server.api.deployments import environment_statuses
from conveyor.server.api.hosts import placements
from conveyor.server.auth import Viewer
from conveyor.server.deps import AppFilter, SessionDep, get_app_or_404
from conveyor.server.edge import responses
from conveyor.server.views import app_out, release_out, run_out
from conveyor.store.models import App, Release, Run

router = APIRouter(prefix="/api", tags=["status"])


@router.get("/status", responses=responses(404))
def status(_: Viewer, session: SessionDep, app: AppFilter = None) -> list[AppStatus]:
    apps = (
        [get_app_or_404(session, app)]
        if app is not None
        else list(session.scalars(select(App).order_by(App.name)).all())
    )
    out = []
    for a in apps:
        active = session.scalars(
            select(Run).where(Run.app_id == a.id, Run.state.in_(ACTIVE)).order_by(Run.id)
        ).all()
        last = session.scalar(
            select(Run)
            .where(Run.app_id == a.id, Run.state.not_in(ACTIVE))
            .order_by(Run.id.desc())
            .limit(1)
        )
        release = session.scalar(
            select(Release)
            .where(Release.app_id == a.id)
            .order_by(Release.created_at.desc())
            .limit(1)
        )
        out.append(
            AppStatus(
                app=app_out(a),
                active_runs=[run_out(r, steps=True) for r in active],
                last_run=run_out(last) if last else None,
                last_release=release_out(release) if release else None,
                hosts=placements(session, a),
                environments=environment_statuses(session, a),
            )
        )
    return out


@router.get("/whoami")
def whoami(caller: Viewer) -> dict[str, str]:
    return {"name": caller.name, "role": caller.role}


__all__ = ["router"]
