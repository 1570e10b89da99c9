"""Gitea (and Forgejo) push webhooks: X-Gitea-Signature, X-Gitea-Delivery."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from conveyor.server.deps import SessionDep
from conveyor.server.edge import responses
from conveyor.server.hooks.common import (
    Push,
    accepted,
    body_digest,
    find_app,
    handle_push,
    hmac_sha256,
    json_object,
    signature_matches,
    unauthorized,
)

router = APIRouter(prefix="/hooks", tags=["webhooks"], responses=responses(400, 401, 404, 413))


@router.post("/gitea/{name}", status_code=202)
async def gitea(name: str, request: Request, session: SessionDep) -> JSONResponse:
    body = await request.body()
    app = find_app(session, name)
    signature = request.headers.get("x-gitea-signature") or request.headers.get(
        "x-forgejo-signature"
    )
    if signature is None:
        raise unauthorized("Gitea", "missing X-Gitea-Signature header")
    if not signature_matches(hmac_sha256(app.webhook_secret, body), signature):
        raise unauthorized("Gitea", "X-Gitea-Signature does not match the app's secret")
    event = request.headers.get("x-gitea-event") or request.headers.get("x-forgejo-event") or "push"
    if event != "push":
        return accepted("ignored", f"event {event!r} is not a push")
    payload = json_object(body)
    push = Push(
        ref=str(payload.get("ref", "")),
        after=str(payload.get("after", "")),
        pusher=str((payload.get("pusher") or {}).get("login", "gitea")),
    )
    delivery = request.headers.get("x-gitea-delivery") or body_digest(body)
    return handle_push(request, session, app, provider="gitea", delivery=delivery, push=push)
