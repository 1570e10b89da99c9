"""`Idempotency-Key`: a retried request gets the first answer again and changes nothing.

A client that sends a deploy, rollback, approve or run request and loses the answer
(a timeout, a dropped connection) cannot know whether it took effect. Sent with an
`Idempotency-Key`, the first answer (status and body) is kept for a day, per token,
route and key, in the same transaction as what the request changed; a retry with the
key gets that answer back (header `Idempotent-Replayed: true`); the same key with
another body is refused (422), since it is surely a mistake.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

from fastapi import FastAPI, Header, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.deploy.gates import GateError
from conveyor.server.auth import Caller
from conveyor.store.locking import lock_for_writing
from conveyor.store.models import IdempotentRequest, utcnow

KEEP = timedelta(hours=24)
MAX_KEY = 255
ATTEMPTS = 3  # a unique index refusing a row: decide again from what is there now

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_KEY,
        description=(
            "Optional, any unique string (a UUID): a retry with the same key gets the first "
            "answer again and changes nothing; kept 24 h per token and route"
        ),
    ),
]

T = TypeVar("T")


@dataclass(frozen=True)
class Stored:
    """A kept answer, as the decision needs it."""

    fingerprint: str
    created_at: datetime


def fingerprint(body: Any) -> str:
    """The request's body as parsed, canonical: `{}` and `{"release": null}` are one request."""
    data = jsonable_encoder(body)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def scope(method: str, path: str, key: str) -> str:
    return hashlib.sha256(f"{method} {path}\n{key}".encode()).hexdigest()


def verdict(
    stored: Stored | None, fingerprint: str, now: datetime
) -> Literal["new", "replay", "mismatch"]:
    """What to do with a request carrying a key, given what is kept under it."""
    if stored is None or now - stored.created_at >= KEEP:
        return "new"
    return "replay" if stored.fingerprint == fingerprint else "mismatch"


class Replayed(Exception):
    """Answers a retried request with the kept answer (the handler `install` adds)."""

    def __init__(self, response: Response) -> None:
        super().__init__("replayed")
        self.response = response


def install(api: FastAPI) -> None:
    async def replayed(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, Replayed)
        return exc.response

    api.add_exception_handler(Replayed, replayed)


class Once:
    """One request's key (if it has one): recall a kept answer, or keep this one."""

    def __init__(self, request: Request, caller: Caller, key: str | None, body: Any) -> None:
        self.key = key
        self.token_id = caller.token_id
        self.route = f"{request.method} {request.url.path}"
        self.scope = scope(request.method, request.url.path, key or "")
        self.fingerprint = fingerprint(body)

    def recall(self, session: Session) -> None:
        """Raise Replayed with the kept answer, if any; 422 when the key came with another body."""
        if self.key is None:
            return
        row = session.scalar(
            select(IdempotentRequest).where(
                IdempotentRequest.token_id == self.token_id, IdempotentRequest.scope == self.scope
            )
        )
        stored = Stored(row.fingerprint, row.created_at) if row is not None else None
        match verdict(stored, self.fingerprint, utcnow()):
            case "new":
                return
            case "mismatch":
                raise HTTPException(
                    422,
                    f"Idempotency-Key {self.key!r} was first sent to {self.route} with another "
                    "request body; send a new key for a new request",
                )
        assert row is not None
        kept = JSONResponse(
            json.loads(row.body), status_code=row.status, headers={"Idempotent-Replayed": "true"}
        )
        raise Replayed(kept)

    def remember(self, session: Session, status: int, content: Any) -> None:
        if self.key is None:
            return
        now = utcnow()
        session.execute(
            delete(IdempotentRequest).where(
                (IdempotentRequest.created_at < now - KEEP)
                | (
                    (IdempotentRequest.token_id == self.token_id)
                    & (IdempotentRequest.scope == self.scope)
                )
            )
        )
        session.add(
            IdempotentRequest(
                token_id=self.token_id,
                scope=self.scope,
                route=self.route,
                key=self.key,
                fingerprint=self.fingerprint,
                status=status,
                body=json.dumps(jsonable_encoder(content)),
                created_at=now,
            )
        )


def answer_once(
    session: Session, once: Once, app_id: int, act: Callable[[], T], *, status: int
) -> T:
    """Do `act` in one write transaction with its answer kept under the request's key.

    `act` makes its changes in `session` and returns the answer; a GateError (or a 409)
    it raises is the answer too: kept, then raised as 409. A unique index refusing the
    changes (a race another way round) makes it decide again from what is there now.
    """
    for attempt in range(ATTEMPTS):
        try:
            lock_for_writing(session, app_id)
            try:
                once.recall(session)
            except Replayed:
                session.rollback()
                raise
            try:
                out = act()
            except (GateError, HTTPException) as exc:
                code = exc.status_code if isinstance(exc, HTTPException) else 409
                if code != 409:
                    raise
                detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
                if once.key is None:
                    session.rollback()
                else:  # a refusal changes nothing but is an answer: kept like any other
                    once.remember(session, 409, {"detail": detail})
                    session.commit()
                raise HTTPException(409, detail) from None
            once.remember(session, status, out)
            session.commit()
            return out
        except IntegrityError:
            session.rollback()
            if attempt + 1 == ATTEMPTS:
                raise HTTPException(
                    409, "other requests changed the same records at the same moment; try again"
                ) from None
    raise AssertionError("unreachable")
