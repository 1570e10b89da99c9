"""API tokens: create one with a role, list, revoke."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import select

from conveyor.protocol import TokenCreate, TokenCreated, TokenOut
from conveyor.server.auth import Admin, hash_token, new_token
from conveyor.server.deps import RecordId, SessionDep
from conveyor.server.edge import responses
from conveyor.store.models import Token, utcnow

router = APIRouter(prefix="/api/tokens", tags=["tokens"])


def _out(token: Token) -> TokenOut:
    return TokenOut(
        id=token.id,
        name=token.name,
        role=token.role,
        created_at=token.created_at,
        revoked=token.revoked_at is not None,
    )


@router.get("")
def list_tokens(_: Admin, session: SessionDep) -> list[TokenOut]:
    return [_out(t) for t in session.scalars(select(Token).order_by(Token.id)).all()]


@router.post("", status_code=201)
def create_token(body: TokenCreate, _: Admin, session: SessionDep) -> TokenCreated:
    value = new_token()
    token = Token(name=body.name, role=body.role, token_hash=hash_token(value))
    session.add(token)
    session.commit()
    return TokenCreated(**_out(token).model_dump(), token=value)


@router.delete("/{token_id}", responses=responses(404, 409))
def revoke_token(token_id: RecordId, caller: Admin, session: SessionDep) -> TokenOut:
    token = session.get(Token, token_id)
    if token is None:
        raise HTTPException(404, f"unknown token {token_id}")
    if token.id == caller.token_id:
        raise HTTPException(409, "refusing to revoke the token making this request")
    token.revoked_at = token.revoked_at or utcnow()
    session.commit()
    return _out(token)
