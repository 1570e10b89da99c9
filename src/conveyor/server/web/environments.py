"""The Environment page: every host's releases and weights, the deployment's steps, actions.

What the page shows comes from the API's own functions (`environments`,
`get_deployment`), and each button posts to a form action that calls the API
function it stands for after `action_caller` has checked the API route's role:
the page, the CLI and the API cannot disagree on what is true or who may act.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from conveyor.config.environment import Environment
from conveyor.deploy.gates import GateError, release_config
from conveyor.deploy.judging import judged_series
from conveyor.deploy.records import ACTING, PENDING, rollback_target
from conveyor.protocol import (
    DeploymentOut,
    DeployRequest,
    EnvironmentStatus,
    Placement,
    RollbackRequest,
    StepSeries,
)
from conveyor.server.api.deployments import (
    _environments,
    abort_deployment,
    approve,
    deploy,
    get_deployment,
    rollback,
)
from conveyor.server.api.environments import environments
from conveyor.server.deps import get_app_or_404
from conveyor.server.web import live
from conveyor.server.web.answers import refused
from conveyor.server.web.buttons import (
    Action,
    RollbackFacts,
    canary_buttons,
    rollback_button,
    time_left,
)
from conveyor.server.web.deployments import sides, step_charts
from conveyor.server.web.render import fragment, page
from conveyor.server.web.scales import release_colours
from conveyor.server.web.session import PageViewer, WebCaller, action_caller, api_role
from conveyor.store.models import Deployment, Release, Run, utcnow

router = APIRouter(include_in_schema=False)

# each action and the API route it stands for: the role asked is that route's
APPROVE = ("POST", "/api/runs/{run_id}/approve")
ABORT = ("POST", "/api/deployments/{deployment_id}/abort")
ROLLBACK = ("POST", "/api/apps/{name}/environments/{env}/rollback")
PROMOTE = ("POST", "/api/apps/{name}/environments/{env}/deploy")
PAUSE = ("POST", "/api/apps/{name}/environments/{env}/pause")


@dataclass(frozen=True)
class ReleaseRow:
    """One release on one host: what the controller wants and what the agent reports."""

    release: str
    desired: int
    observed: int
    phase: str | None  # None: not on the host (yet)
    instances: int
    error: str | None
    new: bool  # the release a deployment underway brings


@dataclass(frozen=True)
class HostView:
    host: str
    online: bool
    converged: bool
    error: str | None
    rows: list[ReleaseRow]


def host_view(p: Placement, new_release: str | None) -> HostView:
    """A host's releases: those desired first (in their order), then any other it reports."""
    observed = {o.release: o for o in p.observed}
    desired = {r.release: r.weight for r in p.desired}
    names = list(desired) + [o.release for o in p.observed if o.release not in desired]
    rows = []
    for name in names:
        o = observed.get(name)
        rows.append(
            ReleaseRow(
                release=name,
                desired=desired.get(name, 0),
                observed=o.weight if o is not None else 0,
                phase=o.phase if o is not None else None,
                instances=o.instances if o is not None else 0,
                error=o.error if o is not None else None,
                new=name == new_release,
            )
        )
    return HostView(p.host, p.online, p.converged, p.error, rows)


@dataclass(frozen=True)
class EnvironmentView:
    """What the page shows of one environment, read in one database session."""

    app: str
    status: EnvironmentStatus
    deployment: DeploymentOut | None  # the one underway, else the last, with its steps
    underway: bool
    new_release: str | None  # the release a deployment underway brings (drawn as "new")
    chain: list[str]
    next_environment: str | None
    actions: list[Action]
    left: str | None  # the time left in the step underway that waits
    now: datetime
    titles: dict[str, str] = field(default_factory=dict)  # each release's commit title
    colours: dict[str, str] = field(default_factory=dict)  # each release's colour class
    charts: list[str] = field(default_factory=list)  # the judged step underway, if any
    charts_of: str | None = None  # ... its name

    @property
    def judged(self) -> bool:
        """Whether the deployment has (or will have) steps the judge watches."""
        d = self.deployment
        return d is not None and (
            d.strategy == "canary"
            or any(s.judgement is not None or s.kind == "monitor" for s in d.steps)
        )

    def hosts(self) -> list[HostView]:
        return [host_view(p, self.new_release) for p in self.status.hosts]


def read_view(request: Request, caller: WebCaller, app: str, env: str) -> EnvironmentView:
    """The environment as the API reports it, and the actions this caller may take."""
    with request.app.state.sessions() as session:
        statuses = environments(app, caller, session)
        status = _status_of(statuses, app, env)
        deployment = status.deployment
        if deployment is None and status.last is not None:
            deployment = get_deployment(status.last.id, caller, session)
        chain = [s.name for s in statuses]
        index = chain.index(env)
        following = chain[index + 1] if index + 1 < len(chain) else None
        actions = _actions(request, session, caller, app, status, following)
        # the step the judge watches now, charted on this page too (all of them: /deployments)
        judged = _judged_now(session, status)
        shown = _shown_releases(status, deployment)
        titles = commit_titles(session, shown)
        colours = _colours(status, deployment, shown)
    return EnvironmentView(
        app=app,
        status=status,
        deployment=deployment,
        underway=status.deployment is not None,
        new_release=status.deployment.release if status.deployment else None,
        chain=chain,
        next_environment=following,
        actions=actions,
        left=time_left(status.deployment) if status.deployment else None,
        now=utcnow(),
        titles=titles,
        colours=colours,
        charts=(
            step_charts(judged, sides(status.deployment), colours, which=("error_rate", "p99"))
            if judged and status.deployment
            else []
        ),
        charts_of=judged.name if judged else None,
    )


def _status_of(statuses: list[EnvironmentStatus], app: str, env: str) -> EnvironmentStatus:
    """The environment named `env` among the app's; a 404 that lists them if there is none."""
    status = next((s for s in statuses if s.name == env), None)
    if status is None:
        known = ", ".join(s.name for s in statuses) or "none yet"
        raise HTTPException(404, f"unknown environment {env!r} of {app} (it has: {known})")
    return status


def _judged_now(session: Session, status: EnvironmentStatus) -> StepSeries | None:
    """The judged step of the deployment underway, once it has a canary request to draw."""
    if status.deployment is None:
        return None
    row = session.get(Deployment, status.deployment.id)
    judged = next(reversed(judged_series(row)), None) if row is not None else None
    if judged and not any(p.canary and p.canary.requests for p in judged.points):
        return None  # nothing to draw yet
    return judged


def _shown_releases(status: EnvironmentStatus, deployment: DeploymentOut | None) -> set[str]:
    """Every release the page names: on the hosts, serving, and the deployment's."""
    shown = {r.release for p in status.hosts for r in p.desired}
    shown |= {o.release for p in status.hosts for o in p.observed}
    shown |= {x for x in (status.release, deployment and deployment.release) if x}
    return shown


def _colours(
    status: EnvironmentStatus, deployment: DeploymentOut | None, shown: set[str]
) -> dict[str, str]:
    """The release serving keeps its own colour; one beside it that would share it moves."""
    new = deployment.release if deployment is not None else None
    before = deployment.previous_release if deployment is not None else None
    return release_colours([status.release, before, *sorted(shown - {new}), new])


def commit_titles(session: Session, releases: set[str]) -> dict[str, str]:
    """The first line of the commit message each release was built from."""
    rows = session.execute(
        select(Release.id, Run.commit_message)
        .join(Run, Run.id == Release.run_id)
        .where(Release.id.in_(releases))
    ).all()
    return {r: m.strip().splitlines()[0] for r, m in rows if m and m.strip()}


def _actions(
    request: Request,
    session: Session,
    caller: WebCaller,
    app: str,
    status: EnvironmentStatus,
    following: str | None,
) -> list[Action]:
    """The buttons that fit the environment's state, of those the caller's role allows.

    A rollback underway gets no button: stopping it, or rolling it back, would only
    leave the environment between two releases again.
    """
    d = status.deployment
    if d is not None and d.kind == "rollback" and d.state in ACTING:
        return []
    hosts = ", ".join(p.host for p in status.hosts) or "no host"
    found: list[Action | None] = []
    if d is not None and caller.may(api_role(request, *APPROVE)):
        found.append(_approve(session, status, d, hosts))
    if following is not None and caller.may(api_role(request, *PROMOTE)):
        found.append(_promote(session, status, following))
    if d is not None and caller.may(api_role(request, *ABORT)):
        found.append(_abort(status, d, hosts))
    if d is not None and d.state == "running" and caller.may(api_role(request, *PAUSE)):
        found += canary_buttons(d)
    if caller.may(api_role(request, *ROLLBACK)):
        found.append(_rollback(session, app, status, d, hosts))
    return [a for a in found if a is not None]


def _approve(
    session: Session, status: EnvironmentStatus, d: DeploymentOut, hosts: str
) -> Action | None:
    row = session.get(Deployment, d.id)
    env = _config(row.release, status.name) if row is not None else None
    if (
        d.state not in PENDING
        or d.run is None
        or d.approved_by is not None
        or env is None
        or env.approval != "required"
    ):
        return None
    return Action(
        "approve",
        "Approve",
        f"Approve run #{d.run}: deploy {d.release} to {status.name} ({_plan(env)}) on {hosts}?",
        {"run": str(d.run), "deployment": str(d.id)},
    )


def _promote(session: Session, status: EnvironmentStatus, following: str) -> Action | None:
    release = session.get(Release, status.release) if status.release else None
    env = _config(release, following) if release is not None else None
    if release is None or env is None:
        return None
    how = _plan(env) + (", after approval" if env.approval == "required" else "")
    return Action(
        "promote",
        f"Promote to {following}",
        f"Deploy {release.id} from {status.name} to {following} ({how})?",
        {"release": release.id, "environment": following},
    )


def _abort(status: EnvironmentStatus, d: DeploymentOut, hosts: str) -> Action | None:
    if d.state in PENDING:
        what = f"Cancel deployment #{d.id} of {d.release} to {status.name} before it starts?"
    elif d.state == "running":
        back = d.previous_release or "the previous release"
        what = (
            f"Abort deployment #{d.id} of {d.release} to {status.name}? "
            f"What it changed on {hosts} goes back to {back}."
        )
    else:
        return None
    back = d.previous_release or "what it ran before"
    return Action(
        "abort",
        f"Abort #{d.id}",
        what,
        {"deployment": str(d.id)},
        danger=True,
        help=f"Abort: stops deployment #{d.id}; what it changed goes back to {back}.",
    )


def _rollback(
    session: Session, app: str, status: EnvironmentStatus, d: DeploymentOut | None, hosts: str
) -> Action:
    """The red button, named by where `conveyor rollback` would lead (or why nowhere)."""
    target: Release | None = None
    none = None
    try:
        target = rollback_target(session, get_app_or_404(session, app), status.name)
    except GateError as exc:
        none = str(exc)
    serving = session.get(Release, status.release) if status.release else None
    last = status.last
    failed = last if last is not None and last.state == "failed" else None
    return rollback_button(
        RollbackFacts(
            environment=status.name,
            serving=status.release,
            target=target.id if target is not None else None,
            none=none,
            target_newer=(
                target is not None
                and serving is not None
                and target.created_at > serving.created_at
            ),
            failed_release=failed.release if failed is not None else None,
            failed_id=failed.id if failed is not None else None,
            acting=d if d is not None and d.state in ACTING else None,
            hosts=hosts,
        )
    )


def _config(release: Release, env: str) -> Environment | None:
    try:
        return release_config(release).environments.get(env)
    except GateError:
        return None


def _plan(env: Environment) -> str:
    """How a deployment to `env` will go, in a few words (for a confirmation)."""
    if env.strategy == "canary":
        how = "canary " + " → ".join(f"{w}%" for w in env.steps)
    else:
        how = env.strategy
    return how + (", then a watch window" if env.monitor.duration else "")


def render(request: Request, caller: WebCaller, app: str, env: str) -> dict[str, str]:
    """The page's live fragments, by the SSE event name that replaces each."""
    try:
        view = read_view(request, caller, app, env)
    except HTTPException as exc:
        return {"hosts": fragment("_flash.html", ok=False, message=exc.detail)}
    return fragments(view, caller)


def fragments(view: EnvironmentView, caller: WebCaller) -> dict[str, str]:
    context: dict[str, Any] = {"v": view, "caller": caller}
    return {
        "hosts": fragment("_env_hosts.html", **context),
        "deployment": fragment("_env_deployment.html", **context),
        "actions": fragment("_env_actions.html", **context),
    }


@router.get("/apps/{app}/environments/{env}", response_class=HTMLResponse)
def environment_page(request: Request, caller: PageViewer, app: str, env: str) -> Response:
    try:
        view = read_view(request, caller, app, env)
    except HTTPException as exc:
        return refused(request, caller, exc)
    return page(
        request,
        "environment.html",
        caller=caller,
        title=f"{env} · {app}",
        breadcrumbs=[("Apps", "/"), (app, f"/#app-{app}"), (env, None)],
        v=view,
        fragments=fragments(view, caller),
    )


@router.get("/ui/apps/{app}/environments/{env}/events")
def environment_events(request: Request, caller: PageViewer, app: str, env: str) -> Response:
    return live.stream(request, lambda: render(request, caller, app, env))


async def act(
    request: Request,
    route: tuple[str, str],
    back: str,
    perform: Callable[[Session, WebCaller, dict[str, str]], str],
) -> Response:
    """A form action: the caller checked as the API route would, then the API function."""
    caller: WebCaller | None = None
    try:
        caller = await action_caller(request, *route)
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}

        def run() -> str:
            with request.app.state.sessions() as session:
                return perform(session, caller, form)

        message = await run_in_threadpool(run)
    except HTTPException as exc:
        return refused(request, caller, exc, back, "Back to the environment")
    if request.headers.get("hx-request"):
        return HTMLResponse(fragment("_flash.html", ok=True, message=message))
    return RedirectResponse(back, status_code=303)


def _field(form: dict[str, str], name: str) -> str:
    value = form.get(name, "").strip()
    if not value:
        raise HTTPException(422, f"the form lacks its {name!r} field: reload the page")
    return value


def _number(form: dict[str, str], name: str) -> int:
    value = _field(form, name)
    if not value.isdigit():
        raise HTTPException(422, f"the form's {name!r} must be a number, got {value!r}")
    return int(value)


def _page_of(app: str, env: str) -> str:
    return f"/apps/{app}/environments/{env}"


@router.post("/apps/{app}/environments/{env}/approve")
async def approve_action(request: Request, app: str, env: str) -> Response:
    def perform(session: Session, caller: WebCaller, form: dict[str, str]) -> str:
        approved = approve(_number(form, "run"), request, caller, session)
        names = ", ".join(f"#{d.id} to {d.environment}" for d in approved)
        return f"Approved by {caller.name}: deployment {names} may start."

    return await act(request, APPROVE, _page_of(app, env), perform)


@router.post("/apps/{app}/environments/{env}/abort")
async def abort_action(request: Request, app: str, env: str) -> Response:
    def perform(session: Session, caller: WebCaller, form: dict[str, str]) -> str:
        d = abort_deployment(_number(form, "deployment"), request, caller, session)
        if d.state == "cancelled":
            return f"Deployment #{d.id} cancelled before it started."
        return f"Deployment #{d.id} is being aborted: its hosts go back to the previous release."

    return await act(request, ABORT, _page_of(app, env), perform)


@router.post("/apps/{app}/environments/{env}/rollback")
async def rollback_action(request: Request, app: str, env: str) -> Response:
    def perform(session: Session, caller: WebCaller, form: dict[str, str]) -> str:
        body = RollbackRequest(to=_field(form, "to"))
        d = rollback(app, env, body, request, caller, session)
        return f"Rollback #{d.id} of {env} to {d.release} started."

    return await act(request, ROLLBACK, _page_of(app, env), perform)


@router.post("/apps/{app}/environments/{env}/promote")
async def promote_action(request: Request, app: str, env: str) -> Response:
    def perform(session: Session, caller: WebCaller, form: dict[str, str]) -> str:
        chain = _environments(get_app_or_404(session, app), session)
        target = _field(form, "environment")
        following = chain[chain.index(env) + 1 :][:1] if env in chain else []
        if following != [target]:
            raise HTTPException(
                409, f"{target} does not follow {env} in {app}'s promotion chain any more"
            )
        body = DeployRequest(release=_field(form, "release"))
        d = deploy(app, target, body, request, caller, session)
        return f"Deployment #{d.id} of {d.release} to {target} queued ({d.state})."

    return await act(request, PROMOTE, _page_of(app, env), perform)


__all__ = ["EnvironmentView", "read_view", "router"]
