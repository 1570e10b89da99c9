"""What runs where: per app, the runs underway, the last run and the last release."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TypeVar

from fastapi import APIRouter, Request, Response
from pydantic import TypeAdapter
from sqlalchemy import func, select
from sqlalchemy.orm import Session, contains_eager, joinedload, selectinload

from conveyor.deploy.desired import host_app_releases
from conveyor.deploy.gates import release_config
from conveyor.deploy.records import ACTIVE
from conveyor.pipeline.runs import ACTIVE as RUN_ACTIVE
from conveyor.protocol import AppStatus, EnvironmentStatus, PendingContract, Placement
from conveyor.server.api.environments import environment_status, pending_contract
from conveyor.server.api.hosts import host_out
from conveyor.server.auth import Caller, Viewer
from conveyor.server.deps import AppFilter, get_app_or_404
from conveyor.server.edge import responses
from conveyor.server.fastpath import CachedRead, app_name
from conveyor.server.recent import NOT_MODIFIED, Recent
from conveyor.server.views import app_out, release_out, run_out
from conveyor.store.models import App, Deployment, Host, HostApp, Release, Run

router = APIRouter(prefix="/api", tags=["status"])

# every table the answer reads but `hosts`: a change to any shows at once; what agents
# report (hosts' observed state, last seen: several writes a second in a fleet) within 1 s
_recent = Recent(
    (
        "apps",
        "runs",
        "steps",
        "releases",
        "host_apps",
        "deployments",
        "deployment_steps",
        "pull_request_runs",
    )
)
_answers = TypeAdapter(list[AppStatus])
# what the fast path (fastpath.py) may answer from `_recent` before FastAPI: the same key
cached = CachedRead("/api/status", _recent, lambda q: q.get("app", ""), {"app": app_name})


@router.get("/status", response_model=list[AppStatus], responses={**responses(404), **NOT_MODIFIED})
async def get_status(caller: Viewer, request: Request, app: AppFilter = None) -> Response:
    """Per app: runs underway, the last run and release, hosts, environments."""

    def read() -> bytes:
        with request.app.state.sessions() as session:
            return _answers.dump_json(status(caller, session, app or None))

    return await _recent.answer(app or "", read, request.headers.get("if-none-match"))


def status(_: Caller, session: Session, app: str | None = None) -> list[AppStatus]:
    """What GET /api/status answers (the dashboard's apps page shows the same).

    A dozen queries whatever the number of apps (not ten per app): each kind of record
    read for every app at once, then put together per app as hosts.placements and
    deployments.environment_statuses would one app at a time."""
    apps = (
        [get_app_or_404(session, app)]
        if app is not None
        else list(session.scalars(select(App).order_by(App.name)).all())
    )
    ids = [a.id for a in apps]
    placed = _by_app(
        session.scalars(
            select(HostApp)
            .join(Host)
            .where(HostApp.app_id.in_(ids))
            .order_by(Host.name)
            .options(contains_eager(HostApp.host))
        ),
    )
    active = _by_app(
        session.scalars(
            select(Run)
            .where(Run.app_id.in_(ids), Run.state.in_(RUN_ACTIVE))
            .order_by(Run.id)
            .options(selectinload(Run.steps), joinedload(Run.pull_request))
        ),
    )
    last_ids = (
        select(func.max(Run.id))
        .where(Run.app_id.in_(ids), Run.state.not_in(RUN_ACTIVE))
        .group_by(Run.app_id)
    )
    last_runs = {
        r.app_id: r
        for r in session.scalars(
            select(Run).where(Run.id.in_(last_ids)).options(joinedload(Run.pull_request))
        )
    }
    newest = (
        select(
            Release.id,
            func.row_number()
            .over(partition_by=Release.app_id, order_by=Release.created_at.desc())
            .label("n"),
        )
        .where(Release.app_id.in_(ids))
        .subquery()
    )
    releases = {
        r.app_id: r
        for r in session.scalars(
            select(Release).join(newest, newest.c.id == Release.id).where(newest.c.n == 1)
        )
    }
    deployments = _Deployments(session, ids)
    out = []
    for a in apps:
        hosts = [_placement(row, a) for row in placed.get(a.id, [])]
        last, release = last_runs.get(a.id), releases.get(a.id)
        out.append(
            AppStatus(
                app=app_out(a),
                # a pull request's statuses: on the run's own page, not here
                active_runs=[run_out(r, steps=True, statuses=False) for r in active.get(a.id, [])],
                last_run=run_out(last) if last else None,
                last_release=release_out(release) if release else None,
                hosts=hosts,
                environments=deployments.environments(a, release, hosts),
            )
        )
    return out


_Row = TypeVar("_Row", HostApp, Run)


def _by_app(rows: Iterable[_Row]) -> dict[int, list[_Row]]:
    found: dict[int, list[_Row]] = defaultdict(list)
    for row in rows:
        found[row.app_id].append(row)
    return found


def _placement(row: HostApp, app: App) -> Placement:
    """As hosts.placements, for one row already read."""
    host = host_out(row.host)
    observed = next(
        (o for o in (host.observed.apps if host.observed else []) if o.app == app.name), None
    )
    return Placement(
        host=host.name,
        online=host.online,
        converged=host.applied_generation == host.generation,
        desired=host_app_releases(row),
        observed=observed.releases if observed else [],
        error=observed.error if observed else None,
    )


class _Deployments:
    """The deployments that status shows, of every app at once, by app and environment."""

    def __init__(self, session: Session, ids: list[int]) -> None:
        self.session = session
        self.active: dict[tuple[int, str], list[Deployment]] = defaultdict(list)
        for d in session.scalars(
            select(Deployment)
            .where(Deployment.app_id.in_(ids), Deployment.state.in_(ACTIVE))
            .order_by(Deployment.id)
            .options(selectinload(Deployment.steps))
        ):
            self.active[(d.app_id, d.environment)].append(d)
        ended = (
            select(func.max(Deployment.id))
            .where(Deployment.app_id.in_(ids), Deployment.state.not_in(ACTIVE))
            .group_by(Deployment.app_id, Deployment.environment)
        )
        self.last = {
            (d.app_id, d.environment): d
            for d in session.scalars(
                select(Deployment)
                .where(Deployment.id.in_(ended))
                .options(selectinload(Deployment.steps))
            )
        }
        # as store.serving.serving_release: the last to finish in place
        ranked = (
            select(
                Deployment.app_id,
                Deployment.environment,
                Deployment.release_id,
                func.row_number()
                .over(
                    partition_by=(Deployment.app_id, Deployment.environment),
                    order_by=(Deployment.finished_at.desc(), Deployment.id.desc()),
                )
                .label("n"),
            )
            .where(Deployment.app_id.in_(ids), Deployment.state == "succeeded")
            .subquery()
        )
        self.serving: dict[tuple[int, str], str] = {}
        # whether each serving release may have a contract (a string value under a key
        # "contract" in its conveyor.yml as stored), read in the same query
        self.contracting: set[tuple[int, str]] = set()
        for app_id, env, release_id, has_contract in session.execute(
            select(
                ranked.c.app_id,
                ranked.c.environment,
                ranked.c.release_id,
                Release.config.like('%"contract":"%'),
            )
            .join(Release, Release.id == ranked.c.release_id)
            .where(ranked.c.n == 1)
        ):
            self.serving[(app_id, env)] = release_id
            if has_contract:
                self.contracting.add((app_id, env))

    def _contract(self, app: App, env: str) -> PendingContract | None:
        if (app.id, env) not in self.contracting:
            return None  # most releases have no contract: no more queries for them
        return pending_contract(self.session, app, env, self.serving[(app.id, env)])

    def environments(
        self, app: App, release: Release | None, everywhere: list[Placement]
    ) -> list[EnvironmentStatus]:
        """As deployments.environment_statuses, from what was read."""
        config = release_config(release) if release is not None and release.config else None
        out = []
        for env_name, env in (config.environments if config else {}).items():
            out.append(
                environment_status(
                    env_name,
                    env,
                    self.active.get((app.id, env_name), []),
                    self.last.get((app.id, env_name)),
                    self.serving.get((app.id, env_name)),
                    everywhere,
                    self._contract(app, env_name),
                )
            )
        return out


@router.get("/whoami")
def whoami(caller: Viewer) -> dict[str, str]:
    return {"name": caller.name, "role": caller.role}


__all__ = ["cached", "router"]
