"""503 with Retry-After when the database is busy, never a long hang or a 500.

A request that finds no free connection within the pool's timeout (SQLAlchemy's
pool TimeoutError), or finds SQLite's write lock held for as long (OperationalError
"database is locked"), or waits out a PostgreSQL lock (its `lock_timeout`, set in
store/db.py) or loses a deadlock PostgreSQL broke, is told to come back: the
server is busy, nothing is wrong with the request, and nothing was written (its
transaction is rolled back).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

log = logging.getLogger("conveyor.server")

LOCKED = (
    "database is locked",
    "database table is locked",
    "canceling statement due to lock timeout",
    "deadlock detected",
)


def is_busy(exc: BaseException) -> bool:
    """Whether a database error means "busy, try again" rather than a fault."""
    if isinstance(exc, PoolTimeout):
        return True
    return isinstance(exc, OperationalError) and any(m in str(exc.orig) for m in LOCKED)


def busy_response(retry_after: int) -> Response:
    return JSONResponse(
        {"detail": f"the server is busy (database): retry in {retry_after} s"},
        status_code=503,
        headers={"Retry-After": str(retry_after)},
    )


def install(api: FastAPI, retry_after: int) -> None:
    """Answer 503 + Retry-After for a pool timeout or a database lock waited out."""

    async def busy(request: Request, exc: Exception) -> Response:
        if not is_busy(exc):
            raise exc  # another operational error: a real fault, a 500 and its traceback
        log.warning(
            "database busy: answered 503",
            extra={"path": request.url.path, "error": type(exc).__name__},
        )
        return busy_response(retry_after)

    api.add_exception_handler(PoolTimeout, busy)
    api.add_exception_handler(OperationalError, busy)


__all__ = ["busy_response", "install", "is_busy"]
