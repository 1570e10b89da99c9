"""Deployment records: creating them under the gates, the promotion chain, queries.

Pure database work inside the caller's transaction; orchestrator.py acts on them.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.deploy import contracting
from conveyor.deploy.admission import Admit, Ask, Held, Refuse, admit
from conveyor.deploy.claims import domain_clash, release_claims
from conveyor.deploy.contract import rollback_refusal
from conveyor.deploy.contracting import applied
from conveyor.deploy.gates import GateError, check_hard_gates, environment, release_config
from conveyor.store.locking import lock_for_writing
from conveyor.store.models import (
    DEPLOYMENT_ACTING,
    DEPLOYMENT_PENDING,
    App,
    Deployment,
    Release,
    Run,
    utcnow,
)

# moved to store (notify reads it too, and deploy imports notify): re-exported here
from conveyor.store.serving import serving_release as serving_release

# queued: waiting for its environment; waiting: for approval or the window;
# running / rolling_back: acting on hosts; aborting: asked to stop, rolls back next.
# The database holds at most one PENDING and one ACTING per app and environment.
PENDING = DEPLOYMENT_PENDING
ACTING = DEPLOYMENT_ACTING
ACTIVE = (*PENDING, *ACTING)


class Refused(GateError):
    """The environment already has what was asked, or something that goes first."""

    def __init__(self, refusal: Refuse) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


ENDED = ("succeeded", "failed", "cancelled", "superseded")


def active_in(session: Session, app_id: int, env: str) -> list[Deployment]:
    return list(
        session.scalars(
            select(Deployment)
            .where(
                Deployment.app_id == app_id,
                Deployment.environment == env,
                Deployment.state.in_(ACTIVE),
            )
            .order_by(Deployment.id)
        ).all()
    )


def create_deployment(
    session: Session,
    release: Release,
    env_name: str,
    *,
    mirror: Path,
    trigger: str,
    triggered_by: str,
    run_id: int | None = None,
    forced_by: str | None = None,
    force_reason: str | None = None,
) -> Deployment:
    """Queue a release for an environment after its hard gates; supersede older queued ones.

    Raises GateError (Refused when the environment's line says no: see admission.py).
    """
    _, env = check_hard_gates(session, release, env_name, mirror)
    lock_for_writing(session, release.app_id)
    if isinstance(env.hosts, list):
        mine = release_claims(release, env_name)
        clash = domain_clash(session, release.app, mine, env.hosts)
        if clash is not None:
            raise GateError(clash)
    # deploying an older release is a rollback by another name
    past = rollback_refusal(
        release.id, release.created_at, applied(session, release.app_id, env_name)
    )
    if past is not None:
        raise GateError(past)
    ask = Ask("deploy", release.id, release.created_at, forced=forced_by is not None)
    decision = _admit(session, ask, release.app, env_name)
    deployment = Deployment(
        app_id=release.app_id,
        environment=env_name,
        release_id=release.id,
        run_id=run_id if run_id is not None else release.run_id,
        kind="deploy",
        strategy=env.strategy,
        trigger=trigger,
        triggered_by=triggered_by,
        forced_by=forced_by,
        force_reason=force_reason,
    )
    _end_before(session, decision, deployment)
    session.add(deployment)
    session.flush()
    return deployment


def _admit(session: Session, ask: Ask, app: App, env_name: str) -> Admit:
    held = [
        Held(
            id=d.id,
            kind=d.kind,
            state=d.state,
            release=d.release_id,
            built=d.release.created_at,
            forced=d.forced_by is not None,
            reason=d.reason,
        )
        for d in active_in(session, app.id, env_name)
    ]
    decision = admit(ask, held, app.name, env_name)
    if isinstance(decision, Refuse):
        raise Refused(decision)
    return decision


def _end_before(session: Session, decision: Admit, new: Deployment) -> None:
    """End what the decision ends, before `new` joins the session (the indexes check each row)."""
    now = utcnow()
    for deployment_id in decision.supersede:
        older = session.get_one(Deployment, deployment_id)
        older.state, older.finished_at = "superseded", now
        older.reason = f"superseded by release {new.release_id}"
    for deployment_id in decision.cancel:
        other = session.get_one(Deployment, deployment_id)
        other.state, other.finished_at = "cancelled", now
        other.reason = f"cancelled by a rollback to {new.release_id}"
    for deployment_id in decision.abort:
        other = session.get_one(Deployment, deployment_id)
        other.state = "aborting"
        other.reason = f"aborted by {new.triggered_by}: rollback to {new.release_id}"


def create_rollback(
    session: Session, app: App, env_name: str, target: Release, *, triggered_by: str
) -> Deployment:
    """Back to a release the environment ran before: no gate waits, it only switches."""
    environment(target, env_name)
    ran_here = session.scalar(
        select(Deployment.id).where(
            Deployment.app_id == app.id,
            Deployment.environment == env_name,
            Deployment.release_id == target.id,
            Deployment.state == "succeeded",
        )
    )
    if ran_here is None:
        raise GateError(
            f"release {target.id} never served {env_name}; roll back only to a release that "
            f"did, or deploy it: conveyor deploy {app.name} {env_name} --release {target.id}"
        )
    lock_for_writing(session, app.id)
    refusal = rollback_refusal(target.id, target.created_at, applied(session, app.id, env_name))
    if refusal is not None:
        raise GateError(refusal)
    decision = _admit(session, Ask("rollback", target.id, target.created_at), app, env_name)
    deployment = Deployment(
        app_id=app.id,
        environment=env_name,
        release_id=target.id,
        run_id=target.run_id,
        kind="rollback",
        strategy="switch",
        trigger="rollback",
        triggered_by=triggered_by,
    )
    _end_before(session, decision, deployment)
    session.add(deployment)
    session.flush()
    return deployment


def rollback_target(session: Session, app: App, env_name: str) -> Release:
    """The release to go back to: the one served before the current one."""
    done = session.scalars(
        select(Deployment)
        .where(
            Deployment.app_id == app.id,
            Deployment.environment == env_name,
            Deployment.state == "succeeded",
        )
        .order_by(Deployment.finished_at.desc(), Deployment.id.desc())
    ).all()
    running = next((d for d in active_in(session, app.id, env_name) if d.state in ACTING), None)
    current = done[0].release_id if done else None
    if running is not None and current is not None:
        # mid-deployment: back to what served before it began
        release = session.get(Release, current)
        assert release is not None
        return release
    for d in done:
        if d.release_id != current:
            return d.release
    raise GateError(
        f"{env_name} of {app.name} has no earlier release to roll back to"
        if current
        else f"nothing was deployed to {env_name} of {app.name} yet"
    )


def start_chain(session: Session, run: Run, mirror: Path) -> Deployment | None:
    """A run built a release: queue it for the first environment (in the caller's transaction)."""
    if run.release_id is None:
        return None
    release = session.get(Release, run.release_id)
    if release is None:
        return None
    envs = list(release_config(release).environments)
    if not envs:
        return None
    return _chain_to(session, release, envs[0], mirror, f"run {run.id}")


def continue_chain(session: Session, done: Deployment, mirror: Path) -> Deployment | None:
    """A pipeline deployment succeeded: queue the same release for the next environment."""
    if done.kind != "deploy" or done.trigger != "pipeline":
        return None
    envs = list(release_config(done.release).environments)
    if done.environment not in envs:
        return None
    index = envs.index(done.environment)
    if index + 1 >= len(envs):
        return None
    return _chain_to(session, done.release, envs[index + 1], mirror, done.triggered_by)


def _chain_to(
    session: Session, release: Release, env: str, mirror: Path, triggered_by: str
) -> Deployment:
    try:
        return create_deployment(
            session, release, env, mirror=mirror, trigger="pipeline", triggered_by=triggered_by
        )
    except GateError as exc:
        # e.g. a commit not on the branch: the chain ends here, and the record says why;
        # the environment's line refusing it (a newer release queued) supersedes it
        state = exc.refusal.state if isinstance(exc, Refused) else "failed"
        reason = str(exc) if isinstance(exc, Refused) else f"refused: {exc}"
        refused = Deployment(
            app_id=release.app_id,
            environment=env,
            release_id=release.id,
            run_id=release.run_id,
            kind="deploy",
            strategy="-",
            state=state,
            reason=reason,
            trigger="pipeline",
            triggered_by=triggered_by,
            finished_at=utcnow(),
        )
        session.add(refused)
        session.flush()
        return refused


def create_contracts(session: Session) -> list[Deployment]:
    """A `contract` deployment for each idle environment whose pending contract may run now
    (the previous release gone cold): the contract by itself, without a new release.

    One that failed or was cancelled is not tried again by itself: a person looks, and the
    next deployment of the environment runs it as its first step.
    """
    created = []
    for app, env_name, serving in contracting.candidates(session):
        if not _contract_due(session, app, env_name, serving):
            continue
        # decided again under the write lock (taken only then: this runs every few seconds)
        lock_for_writing(session, app.id)
        session.expire_all()
        if not _contract_due(session, app, env_name, serving):
            continue
        release = session.get_one(Release, serving)
        deployment = Deployment(
            app_id=app.id,
            environment=env_name,
            release_id=serving,
            run_id=release.run_id,
            kind="contract",
            strategy="contract",
            trigger="contract",
            triggered_by="conveyor",
        )
        session.add(deployment)
        session.flush()
        created.append(deployment)
    return created


def _contract_due(session: Session, app: App, env_name: str, serving: str) -> bool:
    """Whether the environment is idle, its release serving `serving`, and its contract
    may run and was not tried by itself before."""
    if active_in(session, app.id, env_name):
        return False
    if serving_release(session, app.id, env_name) != serving:
        return False
    due = contracting.pending(session, app, env_name, serving)
    if due is None or due.waiting is not None:
        return False
    tried = session.scalar(
        select(Deployment.id).where(
            Deployment.app_id == app.id,
            Deployment.environment == env_name,
            Deployment.release_id == serving,
            Deployment.kind == "contract",
            Deployment.state.in_(("failed", "cancelled")),
        )
    )
    return tried is None
