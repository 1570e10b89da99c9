"""The History page: an app's deployments, filtered, and a redeploy of a release that passed.

The rows come from `GET /api/deployments`' own function and a redeploy is the API's
deploy, gates and all: the button is only shown where they would pass, and a refusal
(the gates are checked again when it is pressed) shows the server's own words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from conveyor.deploy.control import done
from conveyor.deploy.detail import control_actions
from conveyor.deploy.gates import GateError, check_hard_gates, release_config
from conveyor.protocol import DeploymentOut, DeploymentState, DeployRequest
from conveyor.server.api.deployments import deploy, list_deployments
from conveyor.server.api.environments import environments
from conveyor.server.deps import get_app_or_404
from conveyor.server.web.render import page
from conveyor.server.web.session import PageViewer, WebCaller, action_caller, api_role
from conveyor.store.models import Release

router = APIRouter(include_in_schema=False)
DEPLOY = "/api/apps/{name}/environments/{env}/deploy"
STATES: tuple[str, ...] = get_args(DeploymentState)
TRIGGERS = ("pipeline", "api", "rollback")
LIMIT = 100


@dataclass(frozen=True)
class Filters:
    """What the page shows: each is empty for "any"."""

    environment: str = ""
    state: str = ""
    trigger: str = ""

    @classmethod
    def read(cls, environment: str, state: str, trigger: str) -> Filters:
        # a value the page never offers means no filter, not an error page
        return cls(
            environment=environment.strip(),
            state=state if state in STATES else "",
            trigger=trigger if trigger in TRIGGERS else "",
        )

    def query(self) -> str:
        pairs = {k: v for k, v in vars(self).items() if v}
        return urlencode(pairs)


@dataclass(frozen=True)
class Redeploy:
    """A release a row may put back, and what its confirmation says will happen."""

    release: str
    environment: str
    effect: str


def redeploys(
    rows: list[DeploymentOut], serving: dict[str, str | None], allowed: dict[tuple[str, str], str]
) -> dict[int, Redeploy]:
    """Which rows get a Redeploy button, by deployment id.

    A row whose release succeeded in its environment, is not what serves it now, and
    passes the gates (`allowed`: (release, environment) → what the deploy will do);
    only its newest such row, so a release is offered once per environment.
    """
    out: dict[int, Redeploy] = {}
    offered: set[tuple[str, str]] = set()
    for d in rows:  # newest first
        key = (d.release, d.environment)
        if d.state != "succeeded" or key in offered or serving.get(d.environment) == d.release:
            continue
        if key in allowed:
            offered.add(key)
            out[d.id] = Redeploy(d.release, d.environment, allowed[key])
    return out


def _effect(release: Release, env: str, serving: str | None) -> str:
    """What deploying `release` to `env` does, in the words of its conveyor.yml."""
    config = release_config(release).environments[env]
    parts = [
        f"{env} serves {serving} now; it goes back to {release.id}"
        if serving
        else f"{env} serves nothing yet; it gets {release.id}",
        f"by {env}'s {config.strategy} strategy, with its checks",
    ]
    waits = []
    if config.approval == "required":
        waits.append("an approval")
    if config.window is not None:
        waits.append(f"the window {config.window}")
    text = ", ".join(parts)
    if waits:
        text += f"; it waits for {' and '.join(waits)}"
    return text + ". The server checks the gates again when you confirm."


def _allowed(
    request: Request,
    session: Session,
    app_name: str,
    rows: list[DeploymentOut],
    serving: dict[str, str | None],
) -> dict[tuple[str, str], str]:
    """(release, environment) → what a redeploy does, for the rows' releases that pass."""
    mirror = request.app.state.engine.paths.mirror(app_name)
    out: dict[tuple[str, str], str] = {}
    for d in rows:
        key = (d.release, d.environment)
        if key in out or d.state != "succeeded" or serving.get(d.environment) == d.release:
            continue
        release = session.get(Release, d.release)
        if release is None:
            continue
        try:
            check_hard_gates(session, release, d.environment, mirror)
        except GateError:
            continue
        out[key] = _effect(release, d.environment, serving.get(d.environment))
    return out


def history_response(
    request: Request,
    caller: WebCaller,
    name: str,
    filters: Filters,
    *,
    limit: int = LIMIT,
    error: str | None = None,
    status: int = 200,
) -> Response:
    with request.app.state.sessions() as session:
        try:
            app = get_app_or_404(session, name)
        except HTTPException as exc:
            return page(
                request,
                "message.html",
                status_code=404,
                caller=caller,
                title="Not found",
                message=exc.detail,
            )
        envs = environments(name, caller, session)
        rows = list_deployments(
            caller,
            session,
            app=app.name,
            environment=filters.environment or None,
            limit=limit,
            state=filters.state or None,  # type: ignore[arg-type]  # one of STATES
            trigger=filters.trigger or None,
        )
        serving = {e.name: e.release for e in envs}
        controls = {
            d: [done(a) for a in actions]
            for d, actions in control_actions(session, [d.id for d in rows]).items()
        }
        may_deploy = caller.may(api_role(request, "POST", DEPLOY))
        buttons = (
            redeploys(rows, serving, _allowed(request, session, app.name, rows, serving))
            if may_deploy
            else {}
        )
    names = [e.name for e in envs]
    names += sorted({d.environment for d in rows} - set(names))
    return page(
        request,
        "history.html",
        status_code=status,
        caller=caller,
        title=f"History · {name}",
        breadcrumbs=[("Apps", "/"), (name, f"/#app-{name}"), ("history", None)],
        app=name,
        rows=rows,
        filters=filters,
        environments=names,
        states=STATES,
        triggers=TRIGGERS,
        redeploys=buttons,
        controls=controls,
        limit=limit,
        error=error,
    )


@router.get("/apps/{name}/history", response_class=HTMLResponse)
def history_page(
    name: str,
    request: Request,
    caller: PageViewer,
    environment: str = "",
    state: str = "",
    trigger: str = "",
    limit: int = LIMIT,
) -> Response:
    return history_response(
        request,
        caller,
        name,
        Filters.read(environment, state, trigger),
        limit=max(1, min(limit, 500)),
    )


@router.post("/apps/{name}/environments/{env}/deploy")
async def deploy_action(name: str, env: str, request: Request) -> Response:
    """The Redeploy button: the API's deploy of the release the form names."""
    caller = await action_caller(request, "POST", DEPLOY)
    form = await request.form()
    release = form.get("release")
    body = DeployRequest(release=release if isinstance(release, str) and release else None)

    def perform() -> Response:
        with request.app.state.sessions() as session:
            try:
                started = deploy(name, env, body, request, caller, session)
            except HTTPException as exc:
                refused = f"Not deployed: {exc.detail}"
                return history_response(
                    request,
                    caller,
                    name,
                    Filters(environment=env),
                    error=refused,
                    status=exc.status_code,
                )
        return RedirectResponse(f"/deployments/{started.id}", status_code=303)

    return await run_in_threadpool(perform)


__all__ = ["Filters", "redeploys", "router"]
