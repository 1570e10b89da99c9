"""GitHub push and pull_request webhooks: X-Hub-Signature-256, X-GitHub-Delivery."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from conveyor.forge.pulls import github_pull
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
from conveyor.server.hookscript import HOOK_AGENT

router = APIRouter(prefix="/hooks", tags=["webhooks"], responses=responses(400, 401, 404, 413))


@router.post(
    "/github/{name}", status_code=202, responses={200: {"description": "a ping, answered"}}
)
def github(name: str, request: Request, session: SessionDep, body: RawBody) -> JSONResponse:
    app = signed_app(
        session,
        name,
        provider="GitHub",
        header="X-Hub-Signature-256",
        given=request.headers.get("x-hub-signature-256"),
        expected=lambda secret: "sha256=" + hmac_sha256(secret, body),
    )
    event = request.headers.get("x-github-event", "push")
    if event == "ping":
        return JSONResponse({"status": "pong"}, status_code=200)
    if event not in ("push", "pull_request"):
        return accepted("ignored", f"event {event!r} is neither a push nor a pull_request")
    payload = json_object(body)
    delivery = request.headers.get("x-github-delivery") or body_digest(body)
    if event == "pull_request":
        pull = github_pull(payload)
        return handle_pull(request, session, app, provider="github", delivery=delivery, pull=pull)
    push = Push(
        ref=str(payload.get("ref", "")),
        after=str(payload.get("after", "")),
        pusher=str((payload.get("pusher") or {}).get("name", "github")),
    )
    # the post-receive hook speaks GitHub's format; its runs say where they came from
    provider = "git-hook" if request.headers.get("user-agent") == HOOK_AGENT else "github"
    return handle_push(request, session, app, provider=provider, delivery=delivery, push=push)
