"""Gates, enforced by the server: what a release needs before it may reach an environment.

Hard gates refuse a deployment outright (tests, earlier environments, branch):
no waiting makes them pass. Soft gates (approval, window) hold a deployment
in `waiting` until they open.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.config import Config, Environment
from conveyor.deploy import migrationgate
from conveyor.deploy.configs import release_config as parsed_config
from conveyor.store.models import Deployment, Release, Run

SUCCEEDED = "succeeded"


class GateError(Exception):
    """A release may not reach an environment; the message says why and what to do."""


def release_config(release: Release) -> Config:
    if not release.config:
        raise GateError(f"release {release.id} has no recorded conveyor.yml; rebuild it")
    return parsed_config(release.config)


def environment(release: Release, name: str) -> tuple[Config, Environment]:
    config = release_config(release)
    env = config.environments.get(name)
    if env is None:
        known = ", ".join(config.environments) or "none"
        raise GateError(
            f"release {release.id}'s conveyor.yml has no environment {name!r} (it has: {known})"
        )
    return config, env


def tests_passed(session: Session, release: Release) -> None:
    run = session.get(Run, release.run_id)
    if run is None:
        raise GateError(f"release {release.id} has no run on record: its tests are unknown")
    steps = [s for s in run.steps if s.attempt == run.attempt and s.kind == "test"]
    failed = [s for s in steps if s.state != SUCCEEDED]
    if run.state != SUCCEEDED or failed:
        what = f"test step '{failed[0].name}' {failed[0].state}" if failed else run.state
        raise GateError(
            f"release {release.id} did not pass its tests (run {run.id}: {what}); "
            "only a release whose tests passed may be deployed"
        )


def earlier_environments_passed(
    session: Session, release: Release, config: Config, name: str
) -> None:
    """The same bytes succeeded in every environment listed before this one."""
    order = list(config.environments)
    for earlier in order[: order.index(name)]:
        ok = session.scalar(
            select(Deployment.id)
            .join(Release, Deployment.release_id == Release.id)
            .where(
                Deployment.app_id == release.app_id,
                Deployment.environment == earlier,
                Deployment.state == SUCCEEDED,
                Release.sha256 == release.sha256,
            )
            .limit(1)
        )
        if ok is None:
            raise GateError(
                f"release {release.id} has not passed {earlier} (environments deploy in the "
                f"order {' → '.join(order)}); deploy it to {earlier} first: "
                f"conveyor deploy {release.app.name} {earlier} --release {release.id}"
            )


def expand_passed(session: Session, release: Release, config: Config, name: str) -> None:
    """The same expand migration (by content hash) succeeded in every earlier environment."""
    if not config.expand_command:
        return
    digest = release.migration_hash
    refusal = migrationgate.refusal(
        "expand",
        release.id,
        digest,
        name,
        list(config.environments),
        migrationgate.successes(session, release.app_id, digest),
    )
    if refusal is not None:
        raise GateError(refusal)


def on_branch(session: Session, release: Release, config: Config, mirror: Path) -> None:
    """Only commits on the app's branch may reach the last environment."""
    branch = config.branch
    run = session.get(Run, release.run_id)
    if run is not None and run.ref == f"refs/heads/{branch}":
        return
    try:
        proc = subprocess.run(
            ["git", "merge-base", "--is-ancestor", release.sha, f"refs/heads/{branch}"],
            cwd=mirror,
            capture_output=True,
            timeout=30,
            check=False,
        )
        ok = proc.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        raise GateError(
            f"release {release.id} (commit {release.sha[:7]}) is not on branch {branch!r}; "
            f"only commits on {branch!r} may reach the last environment"
        )


def check_hard_gates(
    session: Session, release: Release, name: str, mirror: Path
) -> tuple[Config, Environment]:
    config, env = environment(release, name)
    tests_passed(session, release)
    earlier_environments_passed(session, release, config, name)
    expand_passed(session, release, config, name)
    if name == list(config.environments)[-1]:
        on_branch(session, release, config, mirror)
    return config, env


def waiting_for(
    deployment: Deployment, env: Environment, now: datetime | None = None
) -> str | None:
    """Why a deployment may not start yet (approval, window), or None when it may."""
    if deployment.kind != "deploy":
        return None  # going back to a known release never waits
    if env.approval == "required" and deployment.approved_by is None:
        run = deployment.run_id
        return (
            f"waiting for approval: conveyor approve {run}"
            if run is not None
            else "waiting for approval"
        )
    if env.window is not None and deployment.forced_by is None:
        moment = now or datetime.now(UTC)
        if not env.window.contains(moment):
            opens = env.window.next_open(moment)
            return (
                f"waiting for the deployment window ({env.window}); it opens "
                f"{opens:%a %Y-%m-%d %H:%M %Z}. An admin can force it with a reason"
            )
    return None
