"""Run records: queueing with supersession, and recovery after a crash.

Pure database work; the engine (engine.py) does the side effects.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.store.locking import lock_for_writing
from conveyor.store.models import App, Run, Step, utcnow

ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "superseded", "cancelled")
MAX_ATTEMPTS = 2
INTERRUPTED = "interrupted"
PULL_REFS = ("refs/pull/", "refs/merge-requests/")  # pull-request heads (forge/pulls.py)


def enqueue_run(
    session: Session,
    app: App,
    sha: str,
    *,
    ref: str | None,
    trigger: str,
    triggered_by: str = "",
) -> Run:
    """Queue a run; a run of the app's branch (or of a pull request's head) supersedes older
    queued runs of that ref."""
    run = Run(app_id=app.id, sha=sha, ref=ref, trigger=trigger, triggered_by=triggered_by)
    if ref == f"refs/heads/{app.branch}" or (ref or "").startswith(PULL_REFS):
        older = session.scalars(
            select(Run).where(Run.app_id == app.id, Run.state == "queued", Run.ref == ref)
        ).all()
        for stale in older:
            stale.state = "superseded"
            what = app.branch if ref == f"refs/heads/{app.branch}" else ref
            stale.reason = f"superseded by a newer commit of {what} ({sha[:7]})"
            stale.finished_at = utcnow()
    session.add(run)
    session.flush()
    return run


def next_runnable(session: Session, limit: int) -> list[Run]:
    """Queued runs that may start now: the oldest per app, and none for a busy app.

    Claimed by the transaction: the queued rows are locked (SKIP LOCKED: those another
    server is taking are not waited for) and so are their apps' write locks, in order,
    before the busy apps are read; another server sharing the database sees them
    running once this transaction commits.
    """
    queued = session.scalars(
        select(Run).where(Run.state == "queued").order_by(Run.id).with_for_update(skip_locked=True)
    ).all()
    for app_id in sorted({run.app_id for run in queued}):
        lock_for_writing(session, app_id)
    busy = set(session.scalars(select(Run.app_id).where(Run.state == "running")).all())
    picked: list[Run] = []
    for run in queued:
        session.refresh(run)  # another server may have superseded it before our lock
        if run.state != "queued":
            continue
        if len(picked) >= limit:
            break
        if run.app_id in busy:
            continue
        busy.add(run.app_id)
        picked.append(run)
    return picked


def interrupted_steps(session: Session, only: Collection[int] | None = None) -> list[Step]:
    """Steps that a previous server process left in state running (of these runs only)."""
    # a run handed to a runner is not this server's: its heartbeat tells (handoff.py)
    query = (
        select(Step)
        .join(Run)
        .where(Run.state == "running", Run.handoff.is_(None), Step.state == "running")
    )
    if only is not None:
        query = query.where(Run.id.in_(only))
    return list(session.scalars(query).all())


def end_unfinished_steps(
    steps: Iterable[Step], attempt: int, reason: str | None, now: datetime
) -> list[Step]:
    """As a run ends, end the steps of its attempt that have not: never one left running.

    A step still running fails with the run's reason (an engine error broke off the
    run); a pending one is skipped. Returns the steps that were running.
    """
    broken: list[Step] = []
    for step in steps:
        if step.attempt != attempt:
            continue
        if step.state == "running":
            step.state = "failed"
            step.reason = reason or "the run ended while this step ran"
            step.finished_at = now
            broken.append(step)
        elif step.state == "pending":
            step.state = "skipped"
    return broken


def recover_runs(
    session: Session, only: Collection[int] | None = None, cause: str = "the server stopped"
) -> list[Run]:
    """After a crash: mark interrupted steps, then retry each run once or fail it.

    Called with the leftover processes already stopped. A retry starts again
    from a clean checkout, so no half-done step's effects are trusted.
    """
    recovered: list[Run] = []
    now = utcnow()
    query = select(Run).where(Run.state == "running", Run.handoff.is_(None))
    if only is not None:
        query = query.where(Run.id.in_(only))
    for run in session.scalars(query.with_for_update()).all():
        for step in run.steps:
            if step.attempt != run.attempt:
                continue
            if step.state == "running":
                step.state = INTERRUPTED
                step.reason = f"interrupted: {cause} while this step ran"
                step.finished_at = now
            elif step.state == "pending":
                step.state = "skipped"
        if run.attempt < MAX_ATTEMPTS:
            run.attempt += 1
            run.state = "queued"
            run.reason = (
                f"retrying from a clean workspace (attempt {run.attempt}) after an interruption"
            )
        else:
            run.state = "failed"
            run.reason = INTERRUPTED
            run.finished_at = now
        recovered.append(run)
    return recovered
