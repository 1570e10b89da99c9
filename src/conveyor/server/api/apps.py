"""Apps: register, list, secrets, the post-receive hook script."""

from __future__ import annotations

import re
import secrets as pysecrets

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import select

from conveyor.protocol import AppCreate, AppCreated, AppOut, AppUpdate, SecretSet, Webhooks
from conveyor.server.auth import Admin, Viewer
from conveyor.server.deps import SessionDep, get_app_or_404
from conveyor.server.hookscript import hook_script
from conveyor.server.views import app_out
from conveyor.store.models import App, Secret

router = APIRouter(prefix="/api/apps", tags=["apps"])
_SECRET_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def webhooks(request: Request, name: str) -> Webhooks:
    base = request.app.state.settings.public_url.rstrip("/")
    return Webhooks(
        github=f"{base}/hooks/github/{name}",
        gitlab=f"{base}/hooks/gitlab/{name}",
        gitea=f"{base}/hooks/gitea/{name}",
    )


@router.get("")
def list_apps(_: Viewer, session: SessionDep) -> list[AppOut]:
    return [app_out(a) for a in session.scalars(select(App).order_by(App.name)).all()]


@router.post("", status_code=201)
def add_app(body: AppCreate, request: Request, caller: Admin, session: SessionDep) -> AppCreated:
    if session.scalar(select(App).where(App.name == body.name)) is not None:
        raise HTTPException(409, f"app {body.name!r} already exists")
    app = App(
        name=body.name,
        repo_url=body.repo,
        branch=body.branch,
        poll_interval=body.poll_interval,
        webhook_secret=pysecrets.token_hex(24),
    )
    session.add(app)
    session.commit()
    return AppCreated(
        **app_out(app).model_dump(),
        webhook_secret=app.webhook_secret,
        webhooks=webhooks(request, app.name),
    )


@router.get("/{name}")
def get_app(name: str, _: Viewer, session: SessionDep) -> AppOut:
    return app_out(get_app_or_404(session, name))


@router.patch("/{name}")
def update_app(name: str, body: AppUpdate, _: Admin, session: SessionDep) -> AppOut:
    """Change the repository, branch, polling interval or public status page of an app."""
    app = get_app_or_404(session, name)
    if body.repo is not None:
        app.repo_url = body.repo
    if body.branch is not None:
        app.branch = body.branch
    if body.poll_interval is not None:
        app.poll_interval = body.poll_interval or None
        app.last_polled_at = None
    if body.public_status is not None:
        app.public_status = body.public_status
    session.commit()
    return app_out(app)


@router.get("/{name}/webhook")
def get_webhook(name: str, request: Request, _: Admin, session: SessionDep) -> AppCreated:
    app = get_app_or_404(session, name)
    return AppCreated(
        **app_out(app).model_dump(),
        webhook_secret=app.webhook_secret,
        webhooks=webhooks(request, app.name),
    )


@router.get("/{name}/secrets")
def list_secrets(name: str, _: Admin, session: SessionDep) -> list[str]:
    app = get_app_or_404(session, name)
    return sorted(s.name for s in app.secrets)


@router.put("/{name}/secrets/{key}", status_code=204)
def set_secret(name: str, key: str, body: SecretSet, _: Admin, session: SessionDep) -> None:
    if not _SECRET_NAME.match(key):
        raise HTTPException(422, f"secret name {key!r} must look like an env var: [A-Z_][A-Z0-9_]*")
    app = get_app_or_404(session, name)
    existing = next((s for s in app.secrets if s.name == key), None)
    if existing is None:
        app.secrets.append(Secret(name=key, value=body.value))
    else:
        existing.value = body.value
    session.commit()


@router.delete("/{name}/secrets/{key}", status_code=204)
def delete_secret(name: str, key: str, _: Admin, session: SessionDep) -> None:
    app = get_app_or_404(session, name)
    existing = next((s for s in app.secrets if s.name == key), None)
    if existing is None:
        raise HTTPException(404, f"app {name!r} has no secret {key!r}")
    app.secrets.remove(existing)
    session.commit()


@router.get("/{name}/hook-script", response_class=PlainTextResponse)
def get_hook_script(name: str, request: Request, _: Admin, session: SessionDep) -> str:
    app = get_app_or_404(session, name)
    return hook_script(
        server=request.app.state.settings.public_url,
        app=app.name,
        branch=app.branch,
        secret=app.webhook_secret,
    )
