"""What runs where: per app, the runs underway, the last run and the last release."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.pipeline.runs import ACTIVE
from conveyor.protocol import AppStatus
from conveyor.server.api.deployments import environment_statuses
from conveyor.server.api.hosts import placements
from conveyor.server.auth import Caller, Viewer
from conveyor.server.deps import AppFilter, get_app_or_404
from conveyor.server.edge import responses
from conveyor.server.fastpath import CachedRead, app_name
from conveyor.server.recent import Recent
from conveyor.server.views import app_out, release_out, run_out
from conveyor.store.models import App, Release, Run

router = APIRouter(prefix="/api", tags=["status"])

# every table the answer reads but `hosts`: a change to any shows at once; what agents
# report (hosts' observed state, last seen: several writes a second in a fleet) within 1 s
_recent = Recent(
    ("apps", "runs", "steps", "releases", "host_apps", "deployments", "deployment_steps")
)
_answers = TypeAdapter(list[AppStatus])
# what the fast path (fastpath.py) may answer from `_recent` before FastAPI: the same key
cached = CachedRead("/api/status", _recent, lambda q: q.get("app", ""), {"app": app_name})


@router.get("/status", response_model=list[AppStatus], responses=responses(404))
async def get_status(caller: Viewer, request: Request, app: AppFilter = None) -> Response:
    """Per app: runs underway, the last run and release, hosts, environments."""

    def read() -> bytes:
        with request.app.state.sessions() as session:
            return _answers.dump_json(status(caller, session, app or None))

    return await _recent.answer(app or "", read)


def status(_: Caller, session: Session, app: str | None = None) -> list[AppStatus]:
    """What GET /api/status answers (the dashboard's apps page shows the same)."""
    apps = (
        [get_app_or_404(session, app)]
        if app is not None
        else list(session.scalars(select(App).order_by(App.name)).all())
    )
    out = []
    for a in apps:
        hosts = placements(session, a)
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
                hosts=hosts,
                environments=environment_statuses(session, a, hosts),
            )
        )
    return out


@router.get("/whoami")
def whoami(caller: Viewer) -> dict[str, str]:
    return {"name": caller.name, "role": caller.role}


__all__ = ["cached", "router"]
