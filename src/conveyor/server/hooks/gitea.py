"""Gitea (and Forgejo) push and pull_request webhooks: X-Gitea-Signature, X-Gitea-Delivery."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from conveyor.forge.pulls import gitea_pull
from conveyor.server.deps import SessionDep
from conveyor.server.edge import responses
from conveyor.server.hooks.common import (
    Push,
    RawBody,
    accepted,
    body_digest,
    handle_push,
    hmac_sha256,
    json_object,
    signed_app,
)
from conveyor.server.hooks.pulls import handle_pull

# a pull request opened or reopened, and one whose head moved (Gitea's own event kind)
PULL_EVENTS = ("pull_request", "pull_request_sync")

router = APIRouter(prefix="/hooks", tags=["webhooks"], responses=responses(400, 401, 404, 413))


@router.post("/gitea/{name}", status_code=202)
def gitea(name: str, request: Request, session: SessionDep, body: RawBody) -> JSONResponse:
    app = signed_app(
        session,
        name,
        provider="Gitea",
        header="X-Gitea-Signature",
        given=request.headers.get("x-gitea-signature")
        or request.headers.get("x-forgejo-signature"),
        expected=lambda secret: hmac_sha256(secret, body),
    )
    event = request.headers.get("x-gitea-event") or request.headers.get("x-forgejo-event") or "push"
    if event not in ("push", *PULL_EVENTS):
        return accepted("ignored", f"event {event!r} is neither a push nor a pull_request")
    payload = json_object(body)
    delivery = request.headers.get("x-gitea-delivery") or body_digest(body)
    if event in PULL_EVENTS:
        pull = gitea_pull(payload)
        return handle_pull(request, session, app, provider="gitea", delivery=delivery, pull=pull)
    push = Push(
        ref=str(payload.get("ref", "")),
        after=str(payload.get("after", "")),
        pusher=str((payload.get("pusher") or {}).get("login", "gitea")),
    )
    return handle_push(request, session, app, provider="gitea", delivery=delivery, push=push)
