"""What runs where: per app, the runs underway, the last run and the last release."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict

from fastapi import APIRouter, Request, Response
from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from conveyor.pipeline.runs import ACTIVE
from conveyor.protocol import AppStatus
from conveyor.server.api.deployments import environment_statuses
from conveyor.server.api.hosts import placements
from conveyor.server.auth import Caller, Viewer
from conveyor.server.deps import get_app_or_404
from conveyor.server.views import app_out, release_out, run_out
from conveyor.store import changes
from conveyor.store.models import App, Release, Run

router = APIRouter(prefix="/api", tags=["status"])

# every table the answer reads but `hosts`: a change to any shows at once
STATUS_TABLES = (
    "apps",
    "runs",
    "steps",
    "releases",
    "host_apps",
    "deployments",
    "deployment_steps",
)
# what agents report (hosts' observed state, last seen: several writes a second in a
# fleet) shows within this; so do the other servers' writes to a shared database
FRESH_FOR = 1.0
_answers = TypeAdapter(list[AppStatus])


class Answers:
    """Recent answers of GET /api/status, as the bytes sent, while nothing they read changed."""

    def __init__(self, fresh_for: float = FRESH_FOR) -> None:
        self.fresh_for = fresh_for
        self._lock = threading.Lock()
        self._kept: dict[str, tuple[int, float, bytes]] = {}
        # one read at a time per key (on the loop): the others wait for its answer
        self.reading: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    @staticmethod
    def generation() -> int:
        return sum(changes.generation(t) for t in STATUS_TABLES)

    def get(self, key: str) -> bytes | None:
        found = self._kept.get(key)
        if found is None:
            return None
        generation, at, body = found
        if generation != self.generation() or time.monotonic() - at > self.fresh_for:
            return None
        return body

    def put(self, key: str, generation: int, body: bytes) -> None:
        with self._lock:
            if len(self._kept) > 1000:  # many apps asked one by one: start over
                self._kept.clear()
            self._kept[key] = (generation, time.monotonic(), body)


_recent = Answers()


@router.get("/status", response_model=list[AppStatus])
async def get_status(caller: Viewer, request: Request, app: str | None = None) -> Response:
    """Per app: runs underway, the last run and release, hosts, environments."""
    key = app or ""
    body = _recent.get(key)
    if body is None:
        if len(_recent.reading) > 1000:  # keys of unknown apps too: keep it bounded
            _recent.reading.clear()
        async with _recent.reading[key]:
            body = _recent.get(key) or await run_in_threadpool(_read, request, caller, app)
    return Response(body, media_type="application/json")


def _read(request: Request, caller: Caller, app: str | None) -> bytes:
    generation = Answers.generation()  # before reading: a write meanwhile makes it stale
    with request.app.state.sessions() as session:
        body = _answers.dump_json(status(caller, session, app))
    _recent.put(app or "", generation, body)
    return body


def status(_: Caller, session: Session, app: str | None = None) -> list[AppStatus]:
    """What GET /api/status answers (the dashboard's apps page shows the same)."""
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
