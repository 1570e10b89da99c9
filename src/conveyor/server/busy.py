"""503 with Retry-After when the database is busy or away, never a long hang or a 500.

A request that finds no free connection within the pool's timeout (SQLAlchemy's
pool TimeoutError), or finds SQLite's write lock held for as long (OperationalError
"database is locked"), or waits out a PostgreSQL lock (its `lock_timeout`, set in
store/db.py) or loses a deadlock PostgreSQL broke, is told to come back: the
server is busy, nothing is wrong with the request, and nothing was written (its
transaction is rolled back). So is one that found the database unreachable (stopped,
restarting, the network cut: store/outage.py): 503 `database unavailable`, and the
outage is noted for `/healthz` and logged once.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from conveyor.store.outage import OUTAGE, is_busy, is_unavailable

log = logging.getLogger("conveyor.server")


def busy_response(retry_after: int) -> Response:
    return JSONResponse(
        {"detail": f"the server is busy (database): retry in {retry_after} s"},
        status_code=503,
        headers={"Retry-After": str(retry_after)},
    )


def unavailable_response(retry_after: int) -> Response:
    # libpq's reason (a host, a socket path) is for the server's log, not for any caller
    return JSONResponse(
        {
            "detail": "database unavailable: the server cannot reach its database (its log "
            f"says why); nothing was done, retry in {retry_after} s"
        },
        status_code=503,
        headers={"Retry-After": str(retry_after)},
    )


def install(api: FastAPI, retry_after: int) -> None:
    """Answer 503 + Retry-After for a pool timeout, a database lock waited out, or the
    database unreachable."""

    async def busy(request: Request, exc: Exception) -> Response:
        if is_unavailable(exc):
            OUTAGE.failed(exc, "request")  # logged once for the outage, not per request
            return unavailable_response(retry_after)
        if not is_busy(exc):
            raise exc  # another database error: a real fault, a 500 and its traceback
        log.warning(
            "database busy: answered 503",
            extra={"path": request.url.path, "error": type(exc).__name__},
        )
        return busy_response(retry_after)

    api.add_exception_handler(PoolTimeout, busy)
    api.add_exception_handler(DBAPIError, busy)


__all__ = ["busy_response", "install", "is_busy", "unavailable_response"]
