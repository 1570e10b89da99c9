"""The Unleash client API, so the official Unleash SDKs evaluate conveyor's flags unchanged.

`GET /api/client/features` (with ETag and 304), `POST /api/client/register` and
`POST /api/client/metrics`, authorised by a client token (`conveyor flag token`) that
reads one app and environment. Point an SDK at `{server}/api` (the token says which app
and environment), or at `{server}/api/apps/APP/environments/ENV/unleash`, where a token
of another app or environment is refused (403).
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request, Response
from sqlalchemy import select

from conveyor.deploy.flagstate import document
from conveyor.server.auth import bearer, hash_token
from conveyor.server.deps import AppName, EnvName, SessionDep
from conveyor.server.edge import responses
from conveyor.store import flags as store
from conveyor.store.models import App, FlagClient, FlagToken, utcnow

router = APIRouter(prefix="/api", tags=["unleash"])
SCOPED = "/apps/{name}/environments/{env}/unleash"
MAX_FIELD = 255


def _token(request: Request, session: SessionDep) -> FlagToken:
    header = request.headers.get("authorization", "")
    value = bearer(header) or header.strip()
    found = store.token_scope(session, hash_token(value)) if value else None
    if found is None:
        raise HTTPException(
            401,
            "missing or unknown client token: pass 'Authorization: <token>' with a token "
            "of `conveyor flag token APP ENV`",
        )
    return found


ClientToken = Annotated[FlagToken, Depends(_token)]


def _app_of(session: SessionDep, token: FlagToken) -> App:
    app = session.get(App, token.app_id)
    assert app is not None  # the token goes with its app (cascade)
    return app


def _check_scope(session: SessionDep, token: FlagToken, name: str, env: str) -> None:
    app = _app_of(session, token)
    if (app.name, token.environment) != (name, env):
        if session.scalar(select(App.id).where(App.name == name)) is None:
            raise HTTPException(404, f"unknown app {name!r}")
        raise HTTPException(
            403,
            f"this client token reads {token.environment} of {app.name}, not {env} of {name}: "
            "create one for it with `conveyor flag token`",
        )


def features_body(session: SessionDep, token: FlagToken) -> bytes:
    """The features document of the token's app and environment, as the SDKs read it."""
    found = document(session, _app_of(session, token), token.environment)
    return found.model_dump_json(by_alias=True, exclude_none=True).encode()


def _features(request: Request, session: SessionDep, token: FlagToken) -> Response:
    body = features_body(session, token)
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    if etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers={"ETag": etag})
    return Response(body, media_type="application/json", headers={"ETag": etag})


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    return str(value)[:MAX_FIELD] if value is not None else ""


def _client(session: SessionDep, token: FlagToken, data: dict[str, Any]) -> FlagClient:
    instance = _text(data, "instanceId") or "default"
    row = session.scalar(
        select(FlagClient).where(
            FlagClient.token_id == token.id, FlagClient.instance_id == instance
        )
    )
    if row is None:
        row = FlagClient(token_id=token.id, instance_id=instance, app_name="", counts="{}")
        session.add(row)
    row.app_name = _text(data, "appName") or row.app_name
    row.sdk_version = _text(data, "sdkVersion") or row.sdk_version
    row.last_seen_at = utcnow()
    return row


def _register(session: SessionDep, token: FlagToken, data: dict[str, Any]) -> Response:
    _client(session, token, data)
    session.commit()
    return Response(status_code=202)


def _metrics(session: SessionDep, token: FlagToken, data: dict[str, Any]) -> Response:
    row = _client(session, token, data)
    bucket = data.get("bucket")
    if isinstance(bucket, dict):
        row.counts = store.counts_added(json.loads(row.counts or "{}"), bucket)
    session.commit()
    return Response(status_code=202)


Payload = Annotated[dict[str, Any], Body()]
ERRORS = responses(401, 403)
SCOPED_ERRORS = responses(401, 403, 404)
# its own kind of token, not a role's: OpenAPI says so (x-role), as /api/agents/enrol does
CLIENT = {"x-role": "flag-client"}


@router.get("/client/features", responses=ERRORS, response_model=None, openapi_extra=CLIENT)
def client_features(request: Request, token: ClientToken, session: SessionDep) -> Response:
    """Every flag of the token's app and environment (304 when the ETag still holds)."""
    return _features(request, session, token)


@router.post(
    "/client/register", status_code=202, responses=ERRORS, response_model=None, openapi_extra=CLIENT
)
def client_register(data: Payload, token: ClientToken, session: SessionDep) -> Response:
    """An SDK instance says it started (app name, instance id, SDK version)."""
    return _register(session, token, data)


@router.post(
    "/client/metrics", status_code=202, responses=ERRORS, response_model=None, openapi_extra=CLIENT
)
def client_metrics(data: Payload, token: ClientToken, session: SessionDep) -> Response:
    """An SDK instance's counts of each flag's evaluations (on, off, per variant)."""
    return _metrics(session, token, data)


@router.get(
    SCOPED + "/client/features",
    responses=SCOPED_ERRORS,
    response_model=None,
    openapi_extra=CLIENT,
)
def scoped_features(
    name: AppName, env: EnvName, request: Request, token: ClientToken, session: SessionDep
) -> Response:
    """The same, for a token that must be this app and environment's."""
    _check_scope(session, token, name, env)
    return _features(request, session, token)


@router.post(
    SCOPED + "/client/register",
    status_code=202,
    responses=SCOPED_ERRORS,
    response_model=None,
    openapi_extra=CLIENT,
)
def scoped_register(
    name: AppName, env: EnvName, data: Payload, token: ClientToken, session: SessionDep
) -> Response:
    _check_scope(session, token, name, env)
    return _register(session, token, data)


@router.post(
    SCOPED + "/client/metrics",
    status_code=202,
    responses=SCOPED_ERRORS,
    response_model=None,
    openapi_extra=CLIENT,
)
def scoped_metrics(
    name: AppName, env: EnvName, data: Payload, token: ClientToken, session: SessionDep
) -> Response:
    _check_scope(session, token, name, env)
    return _metrics(session, token, data)
