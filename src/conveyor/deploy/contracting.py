"""Contract migrations in the records: which were applied, what hosts hold, the pending one.

A contract runs as a `contract` step (see plan.py): the release that brought it, on the
first host, asked to run a migration whose id starts with CONTRACT_PREFIX. Its step
succeeding is the record that it was applied (no table of its own: the step's targets
say which release it was). Which releases a host holds comes from its agent's last
report (Host.observed): serving, draining or kept warm.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conveyor.config import Config
from conveyor.deploy import migrationgate
from conveyor.deploy.contract import Contract, Held, contract_wait
from conveyor.protocol import ObservedState, ReleaseWeight
from conveyor.store.models import App, Deployment, DeploymentStep, Host, HostApp, Release
from conveyor.store.serving import serving_release

CONTRACT_PREFIX = "contract-"
# phases in which a release's instance is not running: it holds nothing
_COLD = ("stopped", "failed")


@dataclass(frozen=True)
class Pending:
    """A contract not applied yet, and why it waits (None: it may run now)."""

    contract: Contract
    waiting: str | None


def contract_id(deployment_id: int) -> str:
    """The migration id a deployment runs its contract under (once per deployment)."""
    return f"{CONTRACT_PREFIX}{deployment_id}"


def is_contract(migration: str | None) -> bool:
    return migration is not None and migration.startswith(CONTRACT_PREFIX)


def applied(session: Session, app_id: int, env: str) -> dict[str, datetime]:
    """The releases whose contract was applied in an environment -> when each was built."""
    steps = session.scalars(
        select(DeploymentStep)
        .join(Deployment, DeploymentStep.deployment_id == Deployment.id)
        .where(
            Deployment.app_id == app_id,
            Deployment.environment == env,
            DeploymentStep.kind == "contract",
            DeploymentStep.state == "succeeded",
        )
    ).all()
    out: dict[str, datetime] = {}
    for step in steps:
        for items in json.loads(step.targets).values():
            for item in items:
                r = ReleaseWeight.model_validate(item)
                if is_contract(r.migrate) and (release := session.get(Release, r.release)):
                    out[release.id] = release.created_at
    return out


def held(session: Session, app: App, env: str) -> list[Held]:
    """What the environment's hosts report running of the app: serving, draining or warm."""
    hosts = session.scalars(
        select(Host)
        .join(HostApp, HostApp.host_id == Host.id)
        .where(HostApp.app_id == app.id, HostApp.environment == env)
    ).all()
    out: list[Held] = []
    for host in hosts:
        if not host.observed:
            continue
        try:
            observed = ObservedState.model_validate_json(host.observed)
        except ValidationError:
            continue
        found = next((a for a in observed.apps if a.app == app.name), None)
        for r in found.releases if found else []:
            release = session.get(Release, r.release)
            if r.phase in _COLD or release is None:
                continue
            out.append(Held(host.name, r.release, release.created_at, serving=r.weight > 0))
    return out


def candidates(session: Session) -> list[tuple[App, str, str]]:
    """(app, environment, serving release) where the release serving has a contract key:
    the environments a contract may be pending in (the others need no further look)."""
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
        .where(Deployment.state == "succeeded")
        .subquery()
    )
    rows = session.execute(
        select(App, ranked.c.environment, Release.id)
        .join(ranked, ranked.c.app_id == App.id)
        .join(Release, Release.id == ranked.c.release_id)
        .where(ranked.c.n == 1, Release.config.like('%"contract":"%'))
    ).all()
    out = []
    for app, env, release_id in rows:
        config = session.get_one(Release, release_id).config or "{}"
        if Config.model_validate_json(config).migrations.contract:
            out.append((app, env, release_id))
    return out


def pending(session: Session, app: App, env: str, serving: str | None = None) -> Pending | None:
    """The contract of the release serving the environment (`serving`, read if not given),
    if it has one not applied yet."""
    serving = serving or serving_release(session, app.id, env)
    release = session.get(Release, serving) if serving else None
    if release is None or not release.config:
        return None
    config = Config.model_validate_json(release.config)
    command = config.migrations.contract
    if not command or release.id in applied(session, app.id, env):
        return None
    contract = Contract(release.id, release.created_at, command)
    waiting = contract_wait(contract, held(session, app, env))
    if waiting is None:  # the same contract succeeded in every environment before this one
        digest = release.migration_hash
        done = migrationgate.successes(session, app.id, digest)
        order = list(config.environments)
        waiting = migrationgate.refusal("contract", release.id, digest, env, order, done)
    return Pending(contract, waiting)
