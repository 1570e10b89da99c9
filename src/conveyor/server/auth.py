"""API tokens and roles: viewer < deployer < admin, checked on every /api route; runner
beside that ladder (a `conveyor runner`: the runner routes only, nothing else)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from conveyor.store import changes
from conveyor.store.models import Token
from conveyor.store.outage import OUTAGE, is_unavailable

ROLES = ("viewer", "deployer", "admin")
RUNNER = "runner"  # not on the ladder: reads nothing, deploys nothing
TOKEN_PREFIX = "cvy_"
# how long a verified token is taken on trust without a query; a revocation through this
# server ends that at once (the tokens table changed), one through another server sharing
# the database within this time
VERIFIED_FOR = 5.0


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def role_at_least(role: str, needed: str) -> bool:
    if RUNNER in (role, needed):
        return role == needed  # an admin's token is no runner's: it would claim runs
    return ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True)
class Caller:
    """Who is calling: the token's name and role."""

    token_id: int
    name: str
    role: str


class Verified:
    """Tokens verified lately, by digest: most requests need no query to know their caller."""

    def __init__(self, ttl: float = VERIFIED_FOR) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[int, float, Caller]] = {}

    def get(self, digest: str) -> Caller | None:
        found = self._seen.get(digest)
        if found is None:
            return None
        generation, at, caller = found
        if generation != changes.generation("tokens") or time.monotonic() - at > self.ttl:
            return None
        return caller

    def last(self, digest: str, away_since: float) -> Caller | None:
        """While the database is away (since `away_since`, monotonic): the caller this token
        was verified as within `ttl` before that, and not revoked through this server since.
        No revocation can be committed anywhere while the database is away, so this trusts
        a token exactly as far as `get` did when it went."""
        found = self._seen.get(digest)
        if found is None:
            return None
        generation, at, caller = found
        if generation != changes.generation("tokens") or at < away_since - self.ttl:
            return None
        return caller

    def put(self, digest: str, generation: int, caller: Caller) -> None:
        with self._lock:
            if len(self._seen) > 10_000:  # many distinct tokens: start over
                self._seen.clear()
            self._seen[digest] = (generation, time.monotonic(), caller)


_verified = Verified()


def ensure_admin_token(session: Session, token: str | None) -> str | None:
    """Create the first admin token; returns it when it was newly generated (print once).

    With CONVEYOR_ADMIN_TOKEN set, that token is registered (if it is not yet)
    and nothing is printed.
    """
    if token:
        digest = hash_token(token)
        if session.scalar(select(Token).where(Token.token_hash == digest)) is None:
            session.add(Token(name="admin (CONVEYOR_ADMIN_TOKEN)", role="admin", token_hash=digest))
            session.commit()
        return None
    has_admin = session.scalar(
        select(Token).where(Token.role == "admin", Token.revoked_at.is_(None)).limit(1)
    )
    if has_admin is not None:
        return None
    generated = new_token()
    session.add(Token(name="admin", role="admin", token_hash=hash_token(generated)))
    session.commit()
    return generated


def bearer(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header's value, if it is one."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _bearer(request: Request) -> str | None:
    return bearer(request.headers.get("authorization", ""))


def verified_caller(header: str) -> Caller | None:
    """The caller of an Authorization header's value if its token was verified lately (no
    query, no thread); None when it must be checked the usual way (`require`)."""
    token = bearer(header)
    return None if token is None else _verified.get(hash_token(token))


def require(role: str) -> Callable[..., Awaitable[Caller]]:
    """A dependency that lets the request through only with a token of at least `role`."""
    if role not in (*ROLES, RUNNER):
        raise ValueError(role)

    async def check(request: Request) -> Caller:
        # on the loop: a token verified lately costs no query and no thread
        token = _bearer(request)
        if token is None:
            raise HTTPException(
                401,
                "missing API token: pass 'Authorization: Bearer <token>' "
                "(the CLI reads --token or CONVEYOR_TOKEN)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        digest = hash_token(token)
        caller = _verified.get(digest)
        if caller is None:
            try:
                caller = await run_in_threadpool(_verify, request.app.state.sessions, digest)
            except Exception as exc:
                # the database away: a token verified just before serves the reads that can
                # be answered without it (recent.py); the rest answer 503 (busy.py)
                caller = None
                if is_unavailable(exc):
                    OUTAGE.failed(exc, "request")
                    caller = _verified.last(digest, OUTAGE.since or time.monotonic())
                if caller is None:
                    raise
        if not role_at_least(caller.role, role):
            raise HTTPException(
                403, f"this needs the {role} role; your token '{caller.name}' has {caller.role}"
            )
        return caller

    check.__name__ = f"require_{role}"
    return check


def _verify(sessions: sessionmaker[Session], digest: str) -> Caller:
    """The caller a token digest stands for (a query), remembered for a while."""
    generation = changes.generation("tokens")
    with sessions() as session:
        row = session.scalar(select(Token).where(Token.token_hash == digest))
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.token_hash, digest):
        raise HTTPException(
            401, "invalid or revoked API token", headers={"WWW-Authenticate": "Bearer"}
        )
    caller = Caller(token_id=row.id, name=row.name, role=row.role)
    _verified.put(digest, generation, caller)
    return caller


def role_extra(role: str) -> dict[str, Any]:
    """OpenAPI extension naming a route's role, so docs and tests can read it."""
    return {"x-role": role}


Viewer = Annotated[Caller, Depends(require("viewer"))]
Deployer = Annotated[Caller, Depends(require("deployer"))]
Admin = Annotated[Caller, Depends(require("admin"))]
RunnerCaller = Annotated[Caller, Depends(require(RUNNER))]
