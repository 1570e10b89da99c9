"""GitLab push webhooks: X-Gitlab-Token, X-Gitlab-Event-UUID."""

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
    json_object,
    signature_matches,
    unauthorized,
)

router = APIRouter(prefix="/hooks", tags=["webhooks"], responses=responses(400, 401, 404, 413))


@router.post("/gitlab/{name}", status_code=202)
async def gitlab(name: str, request: Request, session: SessionDep) -> JSONResponse:
    body = await request.body()
    app = find_app(session, name)
    token = request.headers.get("x-gitlab-token")
    if token is None:
        raise unauthorized("GitLab", "missing X-Gitlab-Token header")
    if not signature_matches(app.webhook_secret, token):
        raise unauthorized("GitLab", "X-Gitlab-Token does not match the app's secret")
    event = request.headers.get("x-gitlab-event", "Push Hook")
    if event != "Push Hook":
        return accepted("ignored", f"event {event!r} is not a push")
    payload = json_object(body)
    push = Push(
        ref=str(payload.get("ref", "")),
        after=str(payload.get("checkout_sha") or payload.get("after") or ""),
        pusher=str(payload.get("user_username") or payload.get("user_name") or "gitlab"),
    )
    delivery = (
        request.headers.get("x-gitlab-event-uuid")
        or request.headers.get("idempotency-key")
        or body_digest(body)
    )
    return handle_push(request, session, app, provider="gitlab", delivery=delivery, push=push)
