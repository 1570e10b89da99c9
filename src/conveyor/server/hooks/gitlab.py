"""GitLab push and merge request webhooks: X-Gitlab-Token, X-Gitlab-Event-UUID."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from conveyor.forge.pulls import gitlab_merge_request
from conveyor.server.deps import SessionDep
from conveyor.server.edge import responses
from conveyor.server.hooks.common import (
    Push,
    RawBody,
    accepted,
    body_digest,
    handle_push,
    json_object,
    signed_app,
)
from conveyor.server.hooks.pulls import handle_pull

router = APIRouter(prefix="/hooks", tags=["webhooks"], responses=responses(400, 401, 404, 413))


@router.post("/gitlab/{name}", status_code=202)
def gitlab(name: str, request: Request, session: SessionDep, body: RawBody) -> JSONResponse:
    app = signed_app(
        session,
        name,
        provider="GitLab",
        header="X-Gitlab-Token",
        given=request.headers.get("x-gitlab-token"),
        expected=lambda secret: secret,
    )
    event = request.headers.get("x-gitlab-event", "Push Hook")
    if event not in ("Push Hook", "Merge Request Hook"):
        return accepted("ignored", f"event {event!r} is neither a push nor a merge request")
    payload = json_object(body)
    delivery = (
        request.headers.get("x-gitlab-event-uuid")
        or request.headers.get("idempotency-key")
        or body_digest(body)
    )
    if event == "Merge Request Hook":
        pull = gitlab_merge_request(payload)
        return handle_pull(request, session, app, provider="gitlab", delivery=delivery, pull=pull)
    push = Push(
        ref=str(payload.get("ref", "")),
        after=str(payload.get("checkout_sha") or payload.get("after") or ""),
        pusher=str(payload.get("user_username") or payload.get("user_name") or "gitlab"),
    )
    return handle_push(request, session, app, provider="gitlab", delivery=delivery, push=push)
