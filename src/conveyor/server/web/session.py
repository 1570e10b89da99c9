"""Dashboard sign-in: an API token exchanged for an HttpOnly session cookie, with CSRF.

The cookie holds a random value; the database keeps only its sha256 (like API
tokens), the token it was made from and a CSRF secret. Every page and action
re-reads the token, so revoking a token signs its sessions out at once, and a
role is checked exactly as on the API: an action's role is read from the API
route it stands for (`api_role`), never written twice.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from conveyor.server.auth import Caller, hash_token, role_at_least
from conveyor.store.models import Token, WebSession, utcnow

COOKIE = "conveyor_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
LIFETIME = timedelta(hours=12)


@dataclass(frozen=True)
class WebCaller(Caller):
    """A signed-in person: the token's name and role, and the session's CSRF secret."""

    session_id: str = ""
    csrf: str = ""

    def may(self, role: str) -> bool:
        return role_at_least(self.role, role)


class SignInRequired(Exception):
    """A page was asked for without a valid session: the handler redirects to /login."""

    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


def sign_in(session: Session, token: str) -> str | None:
    """A new session for a valid API token: the cookie value, or None for a bad token."""
    row = session.scalar(select(Token).where(Token.token_hash == hash_token(token.strip())))
    if row is None or row.revoked_at is not None:
        return None
    value = secrets.token_urlsafe(32)
    now = utcnow()
    session.execute(delete(WebSession).where(WebSession.expires_at < now))
    session.add(
        WebSession(
            id=_digest(value),
            token_id=row.id,
            csrf=secrets.token_urlsafe(24),
            created_at=now,
            expires_at=now + LIFETIME,
        )
    )
    session.commit()
    return value


def sign_out(session: Session, cookie: str | None) -> None:
    if cookie:
        session.execute(delete(WebSession).where(WebSession.id == _digest(cookie)))
        session.commit()


def current(request: Request) -> WebCaller | None:
    """Who holds the request's session cookie, if it is valid and its token is not revoked."""
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        return None
    with request.app.state.sessions() as session:
        found = session.get(WebSession, _digest(cookie))
        if found is None or found.expires_at < utcnow():
            return None
        token = session.get(Token, found.token_id)
        if token is None or token.revoked_at is not None:
            return None
        return WebCaller(
            token_id=token.id,
            name=token.name,
            role=token.role,
            session_id=found.id,
            csrf=found.csrf,
        )


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def page_viewer(request: Request) -> WebCaller:
    """A page: anyone signed in (viewer and up); otherwise off to the sign-in page."""
    caller = current(request)
    if caller is None:
        raise SignInRequired(
            str(request.url.path) + (f"?{request.url.query}" if request.url.query else "")
        )
    return caller


PageViewer = Annotated[WebCaller, Depends(page_viewer)]


async def check_csrf(request: Request, caller: WebCaller) -> None:
    """A form's hidden field or htmx's header must carry the session's CSRF secret."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, caller.csrf):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")


def api_role(request: Request, method: str, path: str) -> str:
    """The role the API asks for `method path` (its x-role): the dashboard asks the same."""
    # FastAPI keeps included routers as branches: walk their effective routes (paths
    # with the prefixes applied), as OpenAPI does
    for found in iter_route_contexts(request.app.routes):
        route = found.original_route
        if isinstance(route, APIRoute) and found.path == path and method in (route.methods or ()):
            role = (route.openapi_extra or {}).get("x-role")
            if isinstance(role, str):
                return role
    raise LookupError(f"no API route {method} {path} with a role")


async def action_caller(request: Request, method: str, api_path: str) -> WebCaller:
    """An action (a form post): signed in, the CSRF secret, and the API route's role."""
    caller = await run_in_threadpool(current, request)  # it reads the database
    if caller is None:
        raise HTTPException(401, "sign in first: your session has ended")
    await check_csrf(request, caller)
    role = api_role(request, method, api_path)
    if not caller.may(role):
        raise HTTPException(
            403, f"this needs the {role} role; your token '{caller.name}' has {caller.role}"
        )
    return caller


__all__ = [
    "COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "PageViewer",
    "SignInRequired",
    "WebCaller",
    "action_caller",
    "api_role",
    "check_csrf",
    "current",
    "page_viewer",
    "sign_in",
    "sign_out",
]
