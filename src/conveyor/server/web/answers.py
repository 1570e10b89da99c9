"""How a page or a form action answers a refusal: the API's own words, its status code."""

from __future__ import annotations

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from conveyor.server.web.render import fragment, page
from conveyor.server.web.session import WebCaller


def refused(
    request: Request,
    caller: WebCaller | None,
    exc: HTTPException,
    back: str = "/",
    back_label: str | None = None,
) -> Response:
    """A message page, or (to htmx) the fragment that goes where the action's answer goes."""
    if request.headers.get("hx-request"):
        return HTMLResponse(
            fragment("_flash.html", ok=False, message=exc.detail), status_code=exc.status_code
        )
    return page(
        request,
        "message.html",
        status_code=exc.status_code,
        caller=caller,
        title="Not found" if exc.status_code == 404 else "Refused",
        message=exc.detail,
        back=back,
        back_label=back_label,
    )


__all__ = ["refused"]
