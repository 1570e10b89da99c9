"""Apps: register, list, secrets, the post-receive hook script."""

from __future__ import annotations

import re
import secrets as pysecrets
import shutil
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import select

from conveyor.config.values import ENVIRONMENT_NAME_PATTERN
from conveyor.protocol import (
    AppCreate,
    AppCreated,
    AppOut,
    AppUpdate,
    SecretOut,
    SecretSet,
    Webhooks,
)
from conveyor.server.auth import Admin, Viewer
from conveyor.server.deps import AppName, SessionDep, get_app_or_404, public_url
from conveyor.server.edge import responses
from conveyor.server.hookscript import hook_script
from conveyor.server.views import app_out
from conveyor.store import secrets as store
from conveyor.store.models import App
from conveyor.store.removal import artifacts_in_use, find_blockers, refusal, remove_app

router = APIRouter(prefix="/api/apps", tags=["apps"])
_SECRET_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# the pattern is documented, and checked by the routes with a message of their own
SecretName = Annotated[
    str, Path(max_length=255, json_schema_extra={"pattern": _SECRET_NAME.pattern})
]


def webhooks(request: Request, name: str) -> Webhooks:
    base = public_url(request)
    return Webhooks(
        github=f"{base}/hooks/github/{name}",
        gitlab=f"{base}/hooks/gitlab/{name}",
        gitea=f"{base}/hooks/gitea/{name}",
    )


@router.get("")
def list_apps(_: Viewer, session: SessionDep) -> list[AppOut]:
    return [app_out(a) for a in session.scalars(select(App).order_by(App.name)).all()]


@router.post("", status_code=201, responses=responses(409))
def add_app(body: AppCreate, request: Request, caller: Admin, session: SessionDep) -> AppCreated:
    if session.scalar(select(App).where(App.name == body.name)) is not None:
        raise HTTPException(409, f"app {body.name!r} already exists")
    app = App(
        name=body.name,
        repo_url=body.repo,
        branch=body.branch,
        poll_interval=body.poll_interval,
        forge_api=body.forge_api,
        webhook_secret=pysecrets.token_hex(24),
    )
    session.add(app)
    session.commit()
    return AppCreated(
        **app_out(app).model_dump(),
        webhook_secret=app.webhook_secret,
        webhooks=webhooks(request, app.name),
    )


@router.get("/{name}", responses=responses(404))
def get_app(name: AppName, _: Viewer, session: SessionDep) -> AppOut:
    return app_out(get_app_or_404(session, name))


@router.patch("/{name}", responses=responses(404))
def update_app(name: AppName, body: AppUpdate, _: Admin, session: SessionDep) -> AppOut:
    """Change the repository, branch, polling interval, public status page or forge API URL of
    an app."""
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
    if body.forge_api is not None:
        app.forge_api = body.forge_api or None
    session.commit()
    return app_out(app)


@router.delete("/{name}", responses=responses(404, 409))
def delete_app(
    name: AppName,
    request: Request,
    _: Admin,
    session: SessionDep,
    force: bool = Query(False, description="even while it serves traffic or has queued work"),
) -> AppOut:
    """Remove an app with its runs, releases, deployments and secrets; hosts stop it.

    Refused (409) while a deployment or run of it is underway, and, unless `force`,
    while it has queued work or serves traffic on a host.
    """
    app = get_app_or_404(session, name)
    why = refusal(app.name, find_blockers(session, app), force=force)
    if why is not None:
        raise HTTPException(409, why)
    out = app_out(app)
    removed = remove_app(session, app)
    session.commit()
    for host in removed.hosts:
        request.app.state.notifier.changed(host)
    engine = request.app.state.engine
    shutil.rmtree(engine.paths.mirror(out.name), ignore_errors=True)
    for run_id in removed.runs:
        shutil.rmtree(engine.paths.data / "logs" / f"run-{run_id}", ignore_errors=True)
    for sha256 in removed.artifacts - artifacts_in_use(session, removed.artifacts):
        engine.store.path_for(sha256).unlink(missing_ok=True)
    return out


@router.get("/{name}/webhook", responses=responses(404))
def get_webhook(name: AppName, request: Request, _: Admin, session: SessionDep) -> AppCreated:
    app = get_app_or_404(session, name)
    return AppCreated(
        **app_out(app).model_dump(),
        webhook_secret=app.webhook_secret,
        webhooks=webhooks(request, app.name),
    )


EnvironmentQuery = Annotated[
    str | None,
    Query(
        max_length=100,
        pattern=ENVIRONMENT_NAME_PATTERN,
        description="the environment this value is for (none: every environment)",
    ),
]


@router.get("/{name}/secrets", responses=responses(404))
def list_secrets(name: AppName, _: Admin, session: SessionDep) -> list[SecretOut]:
    """The app's secrets: names and scopes, never values."""
    app = get_app_or_404(session, name)
    return [
        SecretOut(name=s.name, environment=s.environment, kind=s.kind)
        for s in store.list_secrets(app)
    ]


@router.put("/{name}/secrets/{key}", status_code=204, responses=responses(404))
def set_secret(
    name: AppName,
    key: SecretName,
    body: SecretSet,
    _: Admin,
    session: SessionDep,
    environment: EnvironmentQuery = None,
) -> None:
    """Set a value for one environment (an environment's own value wins) or every one."""
    if not _SECRET_NAME.match(key):
        raise HTTPException(422, f"secret name {key!r} must look like an env var: [A-Z_][A-Z0-9_]*")
    app = get_app_or_404(session, name)
    if body.command is not None:
        store.set_secret(session, app, key, environment, body.command, "command")
    else:
        assert body.value is not None
        store.set_secret(session, app, key, environment, body.value, "value")
    session.commit()


@router.delete("/{name}/secrets/{key}", status_code=204, responses=responses(404))
def delete_secret(
    name: AppName,
    key: SecretName,
    _: Admin,
    session: SessionDep,
    environment: EnvironmentQuery = None,
) -> None:
    app = get_app_or_404(session, name)
    if not store.delete_secret(session, app, key, environment):
        scope = f" for environment {environment!r}" if environment else " for every environment"
        raise HTTPException(404, f"app {name!r} has no secret {key!r}{scope}")
    session.commit()


# the script is text, its errors JSON: declared apart (a response_class would make both text)
_SCRIPT: dict[int | str, dict[str, Any]] = {
    200: {"description": "a post-receive hook", "content": {"text/plain": {}}}
}


@router.get("/{name}/hook-script", response_model=None, responses=_SCRIPT | responses(404))
def get_hook_script(
    name: AppName, request: Request, _: Admin, session: SessionDep
) -> PlainTextResponse:
    app = get_app_or_404(session, name)
    return PlainTextResponse(
        hook_script(
            server=public_url(request),
            app=app.name,
            branch=app.branch,
            secret=app.webhook_secret,
        )
    )
