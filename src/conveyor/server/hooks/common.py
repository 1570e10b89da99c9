"""What every provider's webhook shares: app lookup, dedupe, and queueing a run."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.pipeline.runs import enqueue_run
from conveyor.protocol import HookAccepted
from conveyor.store.models import App, WebhookDelivery

log = logging.getLogger("conveyor.hooks")
ZERO_SHA = "0" * 40
_COMMIT = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")  # SHA-1 or SHA-256 object names


@dataclass(frozen=True)
class Push:
    """A push event, whatever the provider."""

    ref: str
    after: str
    pusher: str


async def raw_body(request: Request) -> bytes:
    """The request's body, read on the loop (the route itself then runs in a thread)."""
    return await request.body()


RawBody = Annotated[bytes, Depends(raw_body)]


def hmac_sha256(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_matches(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.strip().encode())


def unauthorized(provider: str, what: str) -> HTTPException:
    log.warning("webhook refused", extra={"provider": provider, "why": what})
    return HTTPException(401, f"{provider} webhook refused: {what}")


# What an unknown app's signature is checked against, so that an unknown app costs the
# same work as a known one; random per process, so no signature can ever match it.
_NO_APP_SECRET = secrets.token_hex(24)  # shaped like the secrets `app add` makes


def signed_app(
    session: Session,
    name: str,
    *,
    provider: str,
    header: str,
    given: str | None,
    expected: Callable[[str], str],
) -> App:
    """The app a webhook names, once its signature is checked against the app's secret.

    An unknown app and a wrong signature get the same 401, after the same work (the
    signature is checked against a stand-in secret when the app is unknown), so the
    webhook routes do not tell who may call them which app names exist.
    `expected(secret)` is what the header should hold for this body and secret.
    """
    if given is None:
        raise unauthorized(provider, f"missing {header} header")
    app = session.scalar(select(App).where(App.name == name))
    matches = signature_matches(expected(app.webhook_secret if app else _NO_APP_SECRET), given)
    if app is None or not matches:
        why = "unknown app" if app is None else "signature mismatch"
        log.warning("webhook refused", extra={"provider": provider, "app": name, "why": why})
        raise HTTPException(
            401,
            f"{provider} webhook refused: {header} does not match the secret of an app "
            f"named {name!r}; check the app name in the URL and the secret that "
            "`conveyor app add` printed",
        )
    return app


def accepted(status: str, detail: str, run: int | None = None) -> JSONResponse:
    body = HookAccepted(status=status, detail=detail, run=run)
    return JSONResponse(body.model_dump(), status_code=202)


def handle_push(
    request: Request,
    session: Session,
    app: App,
    *,
    provider: str,
    delivery: str,
    push: Push,
) -> JSONResponse:
    """Record the delivery, then queue a run if this is a push to the app's branch."""
    branch_ref = f"refs/heads/{app.branch}"
    record = WebhookDelivery(provider=provider, delivery_id=delivery[:255], app_id=app.id)
    session.add(record)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        return accepted(
            "duplicate", f"delivery {delivery[:255]} was already received; nothing to do"
        )
    if push.ref != branch_ref:
        session.commit()
        return accepted("ignored", f"push to {push.ref[:255]}; only {branch_ref} starts runs")
    if push.after == ZERO_SHA or not push.after:
        session.commit()
        return accepted("ignored", f"{branch_ref} was deleted")
    if not _COMMIT.fullmatch(push.after):
        session.commit()
        return accepted("ignored", f"'after' is not a commit id: {push.after[:80]!r}")
    run = enqueue_run(
        session,
        app,
        push.after.lower(),
        ref=push.ref,
        trigger=provider,
        triggered_by=push.pusher[:255],
    )
    record.run_id = run.id
    session.commit()
    request.app.state.engine.wake()
    log.info("push queued a run", extra={"provider": provider, "app": app.name, "run": run.id})
    return accepted("queued", f"run {run.id} queued for {push.after[:7]}", run.id)


def body_digest(body: bytes) -> str:
    """A stand-in delivery id for providers that send none: the same event body is the same."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def json_object(body: bytes) -> dict[str, Any]:
    """The webhook body as a JSON object, or a 400 saying why not."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise HTTPException(400, f"webhook body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HTTPException(400, "webhook body must be a JSON object")
    return data
