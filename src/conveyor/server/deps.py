"""Shared FastAPI dependencies: a database session, lookups that 404 clearly."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.protocol import MAX_RECORD_INT
from conveyor.store.models import App, Release, Run

# Path and query parameters, bounded as the columns they are looked up in: an id above
# 2^63 is a 422, never an integer overflow in the database.
RecordId = Annotated[int, Path(ge=1, le=MAX_RECORD_INT)]
AppName = Annotated[str, Path(max_length=100)]
HostName = Annotated[str, Path(max_length=100)]
EnvName = Annotated[str, Path(max_length=100)]
ReleaseId = Annotated[str, Path(max_length=80)]
AppFilter = Annotated[str | None, Query(max_length=100, description="only this app's")]


def public_url(request: Request) -> str:
    """The server's URL as its users reach it, for the URLs an answer gives: `--url`, else
    the URL this request came to (behind a proxy: the scheme of its X-Forwarded-Proto, if
    the proxy is allowed by --forwarded-allow-ips, and the host of its Host header)."""
    settings = request.app.state.settings
    if settings.public_url_given:
        return str(settings.public_url).rstrip("/")
    return str(request.base_url).rstrip("/")


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


# closed as soon as the route returns, before its answer is sent: a slow client does not
# hold a connection, so the pool (as large as the threads) always has one for a thread
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_app_or_404(session: Session, name: str) -> App:
    app = session.scalar(select(App).where(App.name == name))
    if app is None:
        raise HTTPException(404, f"unknown app {name!r}: see `conveyor app add`")
    return app


def get_run_or_404(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise HTTPException(404, f"unknown run {run_id}")
    return run


def get_release_or_404(session: Session, release_id: str) -> Release:
    release = session.get(Release, release_id)
    if release is None:
        raise HTTPException(404, f"unknown release {release_id!r}")
    return release
