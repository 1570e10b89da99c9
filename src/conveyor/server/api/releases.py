"""Releases and their artifacts."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy import select

from conveyor.protocol import ReleaseOut
from conveyor.server.auth import Viewer
from conveyor.server.deps import (
    AppFilter,
    ReleaseId,
    SessionDep,
    get_app_or_404,
    get_release_or_404,
)
from conveyor.server.edge import responses
from conveyor.server.views import release_out
from conveyor.store.models import Release

router = APIRouter(prefix="/api/releases", tags=["releases"])


@router.get("", responses=responses(404))
def list_releases(
    _: Viewer, session: SessionDep, app: AppFilter = None, limit: int = Query(50, ge=1, le=1000)
) -> list[ReleaseOut]:
    query = select(Release).order_by(Release.created_at.desc()).limit(limit)
    if app is not None:
        query = query.where(Release.app_id == get_app_or_404(session, app).id)
    return [release_out(r) for r in session.scalars(query).all()]


@router.get("/{release_id}", responses=responses(404))
def get_release(release_id: ReleaseId, _: Viewer, session: SessionDep) -> ReleaseOut:
    return release_out(get_release_or_404(session, release_id))


@router.get("/{release_id}/artifact", response_class=FileResponse, responses=responses(404))
def get_artifact(
    release_id: ReleaseId, request: Request, _: Viewer, session: SessionDep
) -> FileResponse:
    release = get_release_or_404(session, release_id)
    path = request.app.state.engine.store.path_for(release.sha256)
    return FileResponse(
        path,
        media_type="application/gzip",
        filename=f"{release.app.name}-{release.id}.tar.gz",
        headers={"X-Content-SHA256": release.sha256},
    )
