"""The agents' side of the API: enrol, long-poll desired state, report, download artifacts."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, TypeVar

from anyio import CapacityLimiter, to_thread
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import conveyor
from conveyor.deploy.desired import desired_state
from conveyor.protocol import MAX_INT, DesiredState, Enrol, Enrolled, ObservedState
from conveyor.protocol.versions import AGENT_VERSION_HEADER, REFUSED_STATUS, agent_refusal
from conveyor.server.auth import _bearer, hash_token, new_token
from conveyor.server.deps import ReleaseId, SessionDep, get_release_or_404
from conveyor.server.edge import responses
from conveyor.store.models import Host, Token, utcnow
from conveyor.threads import AGENT_THREADS

log = logging.getLogger("conveyor.server")


def accept_agent_version(
    agent_version: Annotated[
        str | None,
        Header(
            alias=AGENT_VERSION_HEADER,
            max_length=64,
            description="the agent's conveyor version (none: 0.1.0 or older)",
        ),
    ] = None,
) -> None:
    """Refuse agents more than one minor version behind the server (or ahead of it)."""
    why = agent_refusal(conveyor.__version__, agent_version)
    if why is not None:
        log.warning("agent version refused", extra={"agent_version": agent_version})
        raise HTTPException(REFUSED_STATUS, why)


router = APIRouter(
    prefix="/api/agent",
    tags=["agents"],
    dependencies=[Depends(accept_agent_version)],
    responses=responses(REFUSED_STATUS),
)
MAX_WAIT = 60.0
REREAD = 5.0
# a long-poll notes its host seen (a write) only if it was not seen this recently: the
# reports (every 2 s) keep it fresh, and a wave of long-polls asking again after a change
# must not queue twenty writes ahead of the answers (hosts go offline after 15 s)
SEEN_FRESH = timedelta(seconds=5)
T = TypeVar("T")
_lane = CapacityLimiter(AGENT_THREADS)
# reports (writes, each waiting its turn for the database's write lock) take at most half
# the agents' threads: the other half answer long-polls, a kill switch's wave among them
_report_lane = CapacityLimiter(max(1, AGENT_THREADS // 2))


async def in_agent_thread(fn: Callable[..., T], *args: object) -> T:
    """Run a blocking database block in one of the agents' own threads."""
    return await to_thread.run_sync(fn, *args, limiter=_lane)


async def require_agent(request: Request) -> str:
    """The caller must be an enrolled, unrevoked agent; returns its host name."""
    token = _bearer(request)
    if token is None:
        raise HTTPException(401, "missing agent credential", headers={"WWW-Authenticate": "Bearer"})
    return await in_agent_thread(_agent_host, request.app.state.sessions, hash_token(token))


def _agent_host(sessions: sessionmaker[Session], digest: str) -> str:
    with sessions() as session:
        host = session.scalar(select(Host).where(Host.agent_token_hash == digest))
        if host is not None and host.state == "enrolled":
            return str(host.name)
        if session.scalar(select(Token).where(Token.token_hash == digest)) is not None:
            raise HTTPException(403, "this route is for agents; user tokens cannot call it")
    raise HTTPException(
        401, "agent credential unknown or revoked: re-enrol with `conveyor host add`"
    )


AgentHost = Annotated[str, Depends(require_agent)]


@router.post("/enrol", openapi_extra={"x-role": "enrolment"}, responses=responses(401))
def enrol(body: Enrol, session: SessionDep) -> Enrolled:
    """Trade a one-time enrolment token for the agent's own credential."""
    host = session.scalar(select(Host).where(Host.name == body.name))
    digest = hash_token(body.token)
    if (
        host is None
        or host.state == "revoked"
        or host.enrolment_hash is None
        or not hmac.compare_digest(host.enrolment_hash, digest)
    ):
        raise HTTPException(
            401, f"enrolment refused for {body.name!r}: unknown host or token already used"
        )
    credential = new_token()
    host.enrolment_hash = None
    host.agent_token_hash = hash_token(credential)
    host.state = "enrolled"
    host.last_seen = utcnow()
    session.commit()
    return Enrolled(agent_token=credential)


@router.get("/desired")
async def get_desired(
    request: Request,
    host_name: AgentHost,
    after: int = Query(
        -1, ge=-1, le=MAX_INT, description="return at once if the generation is newer than this"
    ),
    wait: float = Query(0, ge=0, le=MAX_WAIT, description="long-poll up to this many seconds"),
) -> DesiredState:
    notifier = request.app.state.notifier
    deadline = time.monotonic() + wait

    def look(first: bool) -> DesiredState | None:
        """The desired state if it is newer than `after` or the wait is over, else None."""
        with request.app.state.sessions() as session:
            host = session.scalar(select(Host).where(Host.name == host_name))
            if host is None or host.state != "enrolled":
                raise HTTPException(401, "agent credential revoked")
            now = utcnow()
            if first and (host.last_seen is None or now - host.last_seen > SEEN_FRESH):
                # seen when it asks, not while its poll waits: a cut-off host goes offline
                host.last_seen = now
                session.commit()
            left = deadline - time.monotonic()
            if host.generation > after or left <= 0 or notifier.closed:
                return desired_state(session, host)
        return None

    first = True
    while True:
        # in a thread: the long-poll waits on the loop, it reads off it
        found = await in_agent_thread(look, first)
        if found is not None:
            return found
        first = False
        # this process's writes wake the waiter at once; re-reading the database now and
        # then only catches another server's writes, so it need not be often
        left = max(0.0, deadline - time.monotonic())
        await notifier.wait(host_name, min(left, REREAD))


@router.post("/report", status_code=204)
async def report(body: ObservedState, request: Request, host_name: AgentHost) -> None:
    if body.host != host_name:
        raise HTTPException(
            422, f"report for {body.host!r} sent with the credential of {host_name!r}"
        )
    if body.address is None and request.client is not None:
        body.address = request.client.host
    async with _report_lane:
        await in_agent_thread(_record, request.app.state.sessions, host_name, body)


def _record(sessions: sessionmaker[Session], host_name: str, body: ObservedState) -> None:
    with sessions() as session:
        host = session.scalar(select(Host).where(Host.name == host_name))
        assert host is not None
        host.observed = body.model_dump_json()
        host.last_seen = utcnow()
        if body.converged:
            host.applied_generation = body.generation
        session.commit()


@router.get("/artifacts/{release_id}", response_class=FileResponse, responses=responses(404))
def artifact(
    release_id: ReleaseId, request: Request, _: AgentHost, session: SessionDep
) -> FileResponse:
    release = get_release_or_404(session, release_id)
    return FileResponse(
        request.app.state.engine.store.path_for(release.sha256),
        media_type="application/gzip",
        headers={"X-Content-SHA256": release.sha256},
    )
