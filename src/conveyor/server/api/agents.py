"""The agents' side of the API: enrol, long-poll desired state, report, download artifacts."""

from __future__ import annotations

import hmac
import logging
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response
from sqlalchemy import select

import conveyor
from conveyor.protocol import MAX_INT, DesiredState, Enrol, Enrolled, ObservedState
from conveyor.protocol.versions import AGENT_VERSION_HEADER, REFUSED_STATUS, agent_refusal
from conveyor.server.auth import _bearer, hash_token, new_token
from conveyor.server.credentials import AgentCredentials
from conveyor.server.deps import ReleaseId, SessionDep, get_release_or_404
from conveyor.server.edge import responses
from conveyor.server.fanout import AgentDesk, DesiredAsk, Report
from conveyor.store.models import Host, utcnow

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


async def require_agent(request: Request) -> str:
    """The caller must be an enrolled, unrevoked agent; returns its host name."""
    token = _bearer(request)
    if token is None:
        raise HTTPException(401, "missing agent credential", headers={"WWW-Authenticate": "Bearer"})
    credentials: AgentCredentials = request.app.state.agent_credentials
    return await credentials.host_of(hash_token(token))


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


@router.get("/desired", response_model=DesiredState)
async def get_desired(
    request: Request,
    host_name: AgentHost,
    after: int = Query(
        -1, ge=-1, le=MAX_INT, description="return at once if the generation is newer than this"
    ),
    wait: float = Query(0, ge=0, le=MAX_WAIT, description="long-poll up to this many seconds"),
) -> Response:
    notifier = request.app.state.notifier
    desk: AgentDesk = request.app.state.agent_desk
    deadline = time.monotonic() + wait
    first = True
    while True:
        # read with the other polls woken at the same time (server/fanout.py): the answer's
        # JSON when the host's generation is newer than `after` or the wait is over
        final = deadline - time.monotonic() <= 0 or notifier.closed
        found = await desk.reads.submit(DesiredAsk(host_name, after, final, first))
        if found.seen:
            desk.reports.post(Report(host_name, None))  # with the next reports' write
        if found.body is not None:
            return Response(found.body, media_type="application/json")
        first = False
        # this process's writes wake the waiter at once; re-reading the database now and
        # then only catches another server's writes, so it need not be often
        left = max(0.0, deadline - time.monotonic())
        await notifier.wait(host_name, min(left, REREAD))


@router.post("/report", status_code=204)
async def report(body: ObservedState, request: Request, host_name: AgentHost) -> None:
    """Record the host's observed state; answered once its batch is committed (503: it
    was not, send it again)."""
    if body.host != host_name:
        raise HTTPException(
            422, f"report for {body.host!r} sent with the credential of {host_name!r}"
        )
    if body.address is None and request.client is not None:
        body.address = request.client.host
    desk: AgentDesk = request.app.state.agent_desk
    await desk.reports.submit(Report(host_name, body))


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
