"""The dashboard's sign-in and its Apps page; `install` puts every page on the server."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from conveyor.server.api.status import status as api_status
from conveyor.server.web import (
    controls,
    delivery,
    deployments,
    environments,
    flags,
    history,
    live,
    public,
    runs,
    styles,
)
from conveyor.server.web.render import STATIC, fragment, page
from conveyor.server.web.session import (
    COOKIE,
    LIFETIME,
    PageViewer,
    SignInRequired,
    WebCaller,
    check_csrf,
    current,
    sign_in,
    sign_out,
)

router = APIRouter(include_in_schema=False)


def _safe_next(next_url: str | None) -> str:
    # only paths of this server: never an open redirect to another site
    if not next_url or not next_url.startswith("/") or next_url.startswith("//"):
        return "/"
    return next_url


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> Response:
    if current(request) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return page(request, "login.html", next=_safe_next(next), error=None, caller=None)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request, token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/"
) -> Response:
    with request.app.state.sessions() as session:
        cookie = sign_in(session, token) if token.strip() else None
    if cookie is None:
        return page(
            request,
            "login.html",
            status_code=401,
            next=_safe_next(next),
            error="That token is not valid (or was revoked). Paste an API token: "
            "`conveyor token create NAME --role viewer` makes one.",
            caller=None,
        )
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=int(LIFETIME.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    caller = await run_in_threadpool(current, request)
    if caller is not None:
        await check_csrf(request, caller)

        def forget() -> None:
            with request.app.state.sessions() as session:
                sign_out(session, request.cookies.get(COOKIE))

        await run_in_threadpool(forget)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def apps_fragment(request: Request, caller: WebCaller) -> str:
    with request.app.state.sessions() as session:
        statuses = api_status(caller, session, None)
    return fragment("_apps.html", apps=statuses, caller=caller)


@router.get("/", response_class=HTMLResponse)
def apps_page(request: Request, caller: PageViewer) -> Response:
    return page(
        request,
        "apps.html",
        caller=caller,
        title="Apps",
        apps_html=apps_fragment(request, caller),
    )


@router.get("/ui/apps/events")
def apps_events(request: Request, caller: PageViewer) -> Response:
    return live.stream(request, lambda: {"apps": apps_fragment(request, caller)})


def install(api: FastAPI) -> None:
    """Mount the dashboard's pages, its static files and the sign-in redirect."""
    api.include_router(router)
    # each page's module adds its router here, one line each
    api.include_router(runs.router)
    api.include_router(history.router)
    api.include_router(public.router)
    api.include_router(environments.router)
    api.include_router(controls.router)
    api.include_router(deployments.router)
    api.include_router(delivery.router)
    api.include_router(flags.router)
    api.include_router(styles.router)  # before the mount, which would answer its paths 404
    api.mount("/static", StaticFiles(directory=STATIC), name="static")

    async def to_login(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        return RedirectResponse(f"/login?next={quote(exc.next_url, safe='/')}", status_code=303)

    api.add_exception_handler(SignInRequired, to_login)


__all__ = ["install", "router"]
