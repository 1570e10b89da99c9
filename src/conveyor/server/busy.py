"""503 with Retry-After when the database is busy or away, never a long hang or a 500.

A request that finds no free connection within the pool's timeout (SQLAlchemy's
pool TimeoutError), or finds SQLite's write lock held for as long (OperationalError
"database is locked"), or waits out a PostgreSQL lock (its `lock_timeout`, set in
store/db.py) or loses a deadlock PostgreSQL broke, is told to come back: the
server is busy, nothing is wrong with the request, and nothing was written (its
transaction is rolled back). So is one that found the database unreachable (stopped,
restarting, the network cut: store/outage.py): 503 `database unavailable`, and the
outage is noted for `/healthz` and logged once. A dashboard page asked for by a browser
gets the same words as a page (503, Retry-After, reloading itself after that long), and an
htmx action the same words where its answer goes, not the API's JSON.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from conveyor.server.web.render import fragment, page
from conveyor.store.outage import OUTAGE, is_busy, is_unavailable

log = logging.getLogger("conveyor.server")


def busy_detail(retry_after: int) -> str:
    return f"the server is busy (database): retry in {retry_after} s"


def unavailable_detail(retry_after: int) -> str:
    # libpq's reason (a host, a socket path) is for the server's log, not for any caller
    return (
        "database unavailable: the server cannot reach its database (its log says why); "
        f"nothing was done, retry in {retry_after} s"
    )


def _json(detail: str, retry_after: int) -> Response:
    headers = {"Retry-After": str(retry_after)}
    return JSONResponse({"detail": detail}, status_code=503, headers=headers)


def _answer(request: Request, detail: str, retry_after: int, title: str) -> Response:
    """The 503: the API's JSON, or a page (an htmx fragment) when a browser asked for one."""
    htmx = bool(request.headers.get("hx-request"))
    if request.url.path.startswith("/api/") or not (
        htmx or "text/html" in request.headers.get("accept", "")
    ):
        return _json(detail, retry_after)
    headers = {"Retry-After": str(retry_after)}
    if htmx:
        html = fragment("_flash.html", ok=False, message=detail)
        return HTMLResponse(html, status_code=503, headers=headers)
    again = request.method == "GET"  # the same page, reloaded after Retry-After
    shown = page(
        request,
        "message.html",
        status_code=503,
        caller=None,
        title=title,
        message=detail,
        back=str(request.url.replace(scheme="", netloc="")) if again else "/",
        back_label="Try again",
        refresh=retry_after if again else None,
    )
    shown.headers.update(headers)
    return shown


def install(api: FastAPI, retry_after: int) -> None:
    """Answer 503 + Retry-After for a pool timeout, a database lock waited out, or the
    database unreachable."""

    async def busy(request: Request, exc: Exception) -> Response:
        if is_unavailable(exc):
            OUTAGE.failed(exc, "request")  # logged once for the outage, not per request
            detail = unavailable_detail(retry_after)
            return _answer(request, detail, retry_after, "Database unavailable")
        if not is_busy(exc):
            raise exc  # another database error: a real fault, a 500 and its traceback
        log.warning(
            "database busy: answered 503",
            extra={"path": request.url.path, "error": type(exc).__name__},
        )
        return _answer(request, busy_detail(retry_after), retry_after, "Busy")

    api.add_exception_handler(PoolTimeout, busy)
    api.add_exception_handler(DBAPIError, busy)


__all__ = ["busy_detail", "install", "is_busy", "unavailable_detail"]
