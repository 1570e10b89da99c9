"""The Environment page's canary controls: promote the step, promote to 100%, pause, resume.

Each form action checks the caller as the API route it stands for would, then
calls that API function: the page and `conveyor promote/pause/resume` are one.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from conveyor.deploy.records import ACTING, active_in
from conveyor.server.api.controls import pause, promote, resume
from conveyor.server.deps import get_app_or_404
from conveyor.server.web.environments import _number, _page_of, act
from conveyor.server.web.session import WebCaller

router = APIRouter(include_in_schema=False)

PROMOTE_STEP = ("POST", "/api/apps/{name}/environments/{env}/promote")
PAUSE = ("POST", "/api/apps/{name}/environments/{env}/pause")
RESUME = ("POST", "/api/apps/{name}/environments/{env}/resume")


def _same_deployment(session: Session, app: str, env: str, form: dict[str, str]) -> None:
    """The deployment the page showed is still the one running (else the click is stale)."""
    shown = _number(form, "deployment")
    found = get_app_or_404(session, app)
    running = next((d for d in active_in(session, found.id, env) if d.state in ACTING), None)
    if running is None or running.id != shown:
        now = f"#{running.id} runs now" if running is not None else "none runs now"
        raise HTTPException(
            409, f"deployment #{shown} to {env} is no longer running ({now}): reload the page"
        )


@router.post("/apps/{app}/environments/{env}/step-promote")
async def promote_step_action(request: Request, app: str, env: str) -> Response:
    def perform(session: Session, caller: WebCaller, form: dict[str, str]) -> str:
        _same_deployment(session, app, env, form)
        d = promote(app, env, request, caller, session, full=False)
        return f"Promoted by {caller.name}: deployment #{d.id}'s step ends now as passed."

    return await act(request, PROMOTE_STEP, _page_of(app, env), perform)


@router.post("/apps/{app}/environments/{env}/step-promote-full")
async def promote_full_action(request: Request, app: str, env: str) -> Response:
    def perform(session: Session, caller: WebCaller, form: dict[str, str]) -> str:
        _same_deployment(session, app, env, form)
        d = promote(app, env, request, caller, session, full=True)
        return (
            f"Promoted to 100% by {caller.name}: deployment #{d.id} sends {d.release} all "
            "traffic next."
        )

    return await act(request, PROMOTE_STEP, _page_of(app, env), perform)


@router.post("/apps/{app}/environments/{env}/step-pause")
async def pause_action(request: Request, app: str, env: str) -> Response:
    def perform(session: Session, caller: WebCaller, form: dict[str, str]) -> str:
        _same_deployment(session, app, env, form)
        d = pause(app, env, request, caller, session)
        return (
            f"Paused by {caller.name}: deployment #{d.id} holds its step until resumed or "
            "promoted; the judge still watches and rolls back on a failure."
        )

    return await act(request, PAUSE, _page_of(app, env), perform)


@router.post("/apps/{app}/environments/{env}/step-resume")
async def resume_action(request: Request, app: str, env: str) -> Response:
    def perform(session: Session, caller: WebCaller, form: dict[str, str]) -> str:
        _same_deployment(session, app, env, form)
        d = resume(app, env, request, caller, session)
        return f"Resumed by {caller.name}: deployment #{d.id} goes on with the time it had left."

    return await act(request, RESUME, _page_of(app, env), perform)
