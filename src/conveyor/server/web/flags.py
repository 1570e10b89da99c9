"""The Flags page of an environment: every flag, what it does and its history; deployers
turn a flag on or off here (the same API function as `conveyor flag on|off`)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from conveyor.flags.definition import describe
from conveyor.protocol.flags import FlagChange
from conveyor.server.api.flags import change_flag, list_flags, show_flag
from conveyor.server.web.answers import refused
from conveyor.server.web.environments import act
from conveyor.server.web.render import page
from conveyor.server.web.session import PageViewer, WebCaller, api_role

router = APIRouter(include_in_schema=False)

CHANGE = ("PATCH", "/api/apps/{name}/environments/{env}/flags/{flag}")


def _page_of(app: str, env: str) -> str:
    return f"/apps/{app}/environments/{env}/flags"


@router.get("/apps/{app}/environments/{env}/flags", response_class=HTMLResponse)
def flags_page(request: Request, caller: PageViewer, app: str, env: str) -> Response:
    try:
        with request.app.state.sessions() as session:
            names = [f.name for f in list_flags(app, env, caller, session)]
            flags = [show_flag(app, env, name, caller, session) for name in names]
    except HTTPException as exc:
        return refused(request, caller, exc)
    return page(
        request,
        "flags.html",
        caller=caller,
        title=f"Flags · {app} {env}",
        breadcrumbs=[
            ("Apps", "/"),
            (app, f"/#app-{app}"),
            (env, f"/apps/{app}/environments/{env}"),
            ("flags", None),
        ],
        app=app,
        env=env,
        flags=flags,
        describe=describe,
        may_change=caller.may(api_role(request, *CHANGE)),
    )


async def _switch(request: Request, app: str, env: str, flag: str, on: bool) -> Response:
    def perform(session: Session, caller: WebCaller, form: dict[str, str]) -> str:
        change_flag(app, env, flag, FlagChange(enabled=on), request, caller, session)
        return f"{flag} turned {'on' if on else 'off'} in {env} by {caller.name}."

    return await act(request, CHANGE, _page_of(app, env), perform)


@router.post("/apps/{app}/environments/{env}/flags/{flag}/on")
async def flag_on_action(request: Request, app: str, env: str, flag: str) -> Response:
    return await _switch(request, app, env, flag, True)


@router.post("/apps/{app}/environments/{env}/flags/{flag}/off")
async def flag_off_action(request: Request, app: str, env: str, flag: str) -> Response:
    return await _switch(request, app, env, flag, False)


__all__ = ["router"]
