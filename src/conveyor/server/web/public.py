"""The public status page /status/APP: an opted-in app's releases and results, for anyone.

It needs no token, so what it may show is decided once, here: `public_view` keeps of the
API's records only environment names, release ids, results in a word and times. Hosts
and their addresses, logs, reasons (a failure's reason can quote a command's output,
secrets masked or not), people's names and commits never reach the template.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from conveyor.protocol import DeploymentOut, EnvironmentStatus
from conveyor.server.api.deployments import get_deployment, list_deployments
from conveyor.server.api.environments import environment_statuses
from conveyor.server.auth import Caller
from conveyor.server.web.render import page
from conveyor.store.models import App, utcnow

router = APIRouter(include_in_schema=False)
RECENT = 20
REFRESH = 30  # seconds between two reloads of the page by the browser
# the page reads through the API's functions, which take a caller: this one is no one's
PUBLIC = Caller(token_id=0, name="public status page", role="viewer")


@dataclass(frozen=True)
class PublicEnvironment:
    name: str
    release: str | None
    since: datetime | None
    underway: bool


@dataclass(frozen=True)
class PublicDeployment:
    environment: str
    release: str
    result: str
    at: datetime | None


@dataclass(frozen=True)
class PublicStatus:
    app: str
    environments: list[PublicEnvironment]
    recent: list[PublicDeployment]


def result(d: DeploymentOut, rolled_back: bool) -> str:
    """A deployment's outcome in a word or two, with nothing of why."""
    match d.state:
        case "succeeded":
            return "rolled back" if d.kind == "rollback" else "deployed"
        case "failed":
            return "failed, rolled back" if rolled_back else "failed"
        case "running" | "rolling_back" | "aborting":
            return "in progress"
        case "queued" | "waiting":
            return "waiting"
    return str(d.state)  # cancelled, superseded


def public_view(
    app: str,
    environments: list[EnvironmentStatus],
    since: dict[str, datetime | None],
    recent: list[DeploymentOut],
    rolled_back: set[int],
) -> PublicStatus:
    """What the public page shows: nothing but names, release ids, results and times."""
    return PublicStatus(
        app=app,
        environments=[
            PublicEnvironment(
                name=e.name,
                release=e.release,
                since=since.get(e.name),
                underway=e.deployment is not None
                and e.deployment.state in ("running", "rolling_back", "aborting"),
            )
            for e in environments
        ],
        recent=[
            PublicDeployment(
                environment=d.environment,
                release=d.release,
                result=result(d, d.id in rolled_back),
                at=d.finished_at or d.started_at or d.created_at,
            )
            for d in recent
        ],
    )


def _not_found(request: Request) -> Response:
    # the same page for an unknown app and one that did not opt in: it says nothing
    # about which apps exist
    return page(
        request,
        "message.html",
        status_code=404,
        caller=None,
        title="Not found",
        message="There is no public status page here.",
        back=None,
    )


@router.get("/status/{name}", response_class=HTMLResponse)
def status_page(name: str, request: Request) -> Response:
    with request.app.state.sessions() as session:
        app = session.scalar(select(App).where(App.name == name))
        if app is None or not app.public_status:
            return _not_found(request)
        environments = environment_statuses(session, app)
        since: dict[str, datetime | None] = {}
        for e in environments:
            done = list_deployments(
                PUBLIC, session, app=name, environment=e.name, limit=50, state="succeeded"
            )
            since[e.name] = next((d.finished_at for d in done if d.release == e.release), None)
        recent = list_deployments(PUBLIC, session, app=name, limit=RECENT)
        rolled_back = {
            d.id
            for d in recent
            if d.state == "failed"
            and any(
                s.kind == "rollback" and s.state == "succeeded"
                for s in get_deployment(d.id, PUBLIC, session).steps
            )
        }
        view = public_view(name, environments, since, recent, rolled_back)
    response = page(
        request,
        "public.html",
        caller=None,
        title=f"{name} status",
        status=view,
        refresh=REFRESH,
        now=utcnow(),
    )
    response.headers["Cache-Control"] = "no-store"
    return response


__all__ = ["PublicStatus", "public_view", "result", "router"]
