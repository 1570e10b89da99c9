"""Runs handed to runners: where a run's steps go, claims, heartbeats, lost runners.

The server checks a run's commit out and plans its steps as always; then, when a
runner may take them (`dispatch`), it records the plan in the run (`runs.handoff`)
instead of running them. A runner claims the run with one conditional UPDATE (the
row's `runner` still empty), which two runners or two servers cannot both win; its
heartbeat pushes `runner_expires_at` on. A run whose runner stopped answering is
retried once from a clean checkout, as a run of a crashed server is
(runs.MAX_ATTEMPTS), then failed with the reason.

Pure decisions (`dispatch`, `fits`, `waiting_reason`) first, then the records.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.config import Config
from conveyor.config.migrationhash import command_files
from conveyor.pipeline.runs import INTERRUPTED, MAX_ATTEMPTS, end_unfinished_steps
from conveyor.store.models import PullRequestRun, Run, Runner, Step, utcnow

HEARTBEAT_TTL = 20.0  # seconds a claimed run stays its runner's without a heartbeat
RUNNER_LIVE = 30.0  # a runner seen this recently is up (its claims long-poll 10 s)

Where = Literal["server", "runners"]


def dispatch(runs_on: Collection[str], live_runners: int) -> Where:
    """Who runs a run's steps: a run asking for labels always waits for a runner with
    them; one asking for none goes to the runners when one is up, else to the server."""
    if runs_on:
        return "runners"
    return "runners" if live_runners > 0 else "server"


def fits(runs_on: Collection[str], labels: Collection[str]) -> bool:
    """May a runner with these labels take a run asking for `runs_on`?"""
    return set(runs_on) <= set(labels)


def waiting_reason(runs_on: Sequence[str], live_labels: Sequence[Collection[str]]) -> str:
    """What a handed-off run says while no runner has claimed it."""
    if not runs_on:
        return "waiting for a runner"
    wanted = ", ".join(runs_on)
    if not any(fits(runs_on, labels) for labels in live_labels):
        return f"waiting for a runner with labels {wanted} (none is up)"
    return f"waiting for a runner with labels {wanted}"


def after_loss(attempt: int, runner: str) -> tuple[str, int, str]:
    """A run whose runner stopped answering: (state, attempt, reason). Retried once from a
    clean workspace, as a run of a crashed server is; failed on its last attempt."""
    if attempt < MAX_ATTEMPTS:
        return (
            "queued",
            attempt + 1,
            f"retrying from a clean workspace (attempt {attempt + 1}) after runner {runner} "
            "stopped answering",
        )
    return (
        "failed",
        attempt,
        f"interrupted: runner {runner} stopped answering (no heartbeat for {HEARTBEAT_TTL:g} s) "
        f"on the run's last attempt ({attempt} of {MAX_ATTEMPTS})",
    )


def parse_labels(text: str) -> list[str]:
    return sorted({label.strip() for label in text.split(",") if label.strip()})


def make_plan(
    config: Config,
    steps: Sequence[tuple[int, str, str, str, float, dict[str, str]]],
    artifact_step: int | None,
) -> dict[str, Any]:
    """What a run handed off keeps for its runner (no secret values: those are read as a
    runner claims it). `steps`: (id, kind, name, command, timeout, env) in order."""
    return {
        "labels": list(config.runs_on),
        "steps": [
            {"id": i, "kind": k, "name": n, "command": c, "timeout": t, "env": e}
            for i, k, n, c, t, e in steps
        ],
        "artifact_step": artifact_step,
        "include": list(config.artifact.include),
        "exclude": list(config.artifact.exclude),
        "secrets": sorted(config.service.secret_names) if config.service else [],
        "migration_files": sorted(command_files(config)),
        "config": config.model_dump_json(),
    }


# -- records ------------------------------------------------------------------


def live_runners(session: Session, now: datetime | None = None) -> list[list[str]]:
    """The labels of each runner seen in the last RUNNER_LIVE seconds."""
    since = (now or utcnow()) - timedelta(seconds=RUNNER_LIVE)
    rows = session.scalars(select(Runner.labels).where(Runner.last_seen >= since)).all()
    return [parse_labels(labels) for labels in rows]


def hand_off(session: Session, run: Run, plan: dict[str, Any]) -> str:
    """Record that runners run this run's steps (committed by the caller); the run's
    reason while it waits."""
    run.handoff = json.dumps(plan)
    run.runner = None
    run.runner_expires_at = None
    run.reason = waiting_reason(plan.get("labels", []), live_runners(session))
    return run.reason


def plan_of(run: Run) -> dict[str, Any]:
    return dict(json.loads(run.handoff or "{}"))


def seen(session: Session, name: str, labels: Sequence[str], token_id: int | None) -> None:
    """Note a runner's request (its labels as it states them now); committed."""
    text = ",".join(sorted(set(labels)))
    done = session.execute(
        update(Runner)
        .where(Runner.name == name)
        .values(labels=text, last_seen=utcnow(), token_id=token_id)
    )
    if not getattr(done, "rowcount", 0):
        session.add(Runner(name=name, labels=text, token_id=token_id, last_seen=utcnow()))
    try:
        session.commit()
    except IntegrityError:  # the same runner's request on another server won the insert
        session.rollback()


def claim(session: Session, name: str, labels: Sequence[str]) -> Run | None:
    """Take the oldest handed-off run this runner fits (committed); None if there is none."""
    waiting = session.scalars(
        select(Run)
        .where(Run.state == "running", Run.handoff.is_not(None), Run.runner.is_(None))
        .order_by(Run.id)
    ).all()
    for run in waiting:
        if not fits(plan_of(run).get("labels", []), labels):
            continue
        taken = session.execute(
            update(Run)
            .where(
                Run.id == run.id,
                Run.state == "running",
                Run.attempt == run.attempt,
                Run.runner.is_(None),
            )
            .values(
                runner=name,
                runner_expires_at=utcnow() + timedelta(seconds=HEARTBEAT_TTL),
                reason=None,
            )
            .execution_options(synchronize_session=False)
        )
        if getattr(taken, "rowcount", 0) == 1:
            session.commit()
            session.refresh(run)
            return run
    session.rollback()
    return None


def held(session: Session, run_id: int, runner: str, attempt: int) -> Run | None:
    """The run if this runner still holds it at this attempt (and it is running)."""
    run = session.get(Run, run_id)
    if run is None or run.state != "running" or run.handoff is None:
        return None
    if run.runner != runner or run.attempt != attempt:
        return None
    return run


def heartbeat(session: Session, run_id: int, runner: str, attempt: int) -> bool:
    """Push the claim's expiry on (committed); False: the runner lost the run."""
    done = session.execute(
        update(Run)
        .where(
            Run.id == run_id,
            Run.state == "running",
            Run.runner == runner,
            Run.attempt == attempt,
        )
        .values(runner_expires_at=utcnow() + timedelta(seconds=HEARTBEAT_TTL))
        .execution_options(synchronize_session=False)
    )
    session.execute(update(Runner).where(Runner.name == runner).values(last_seen=utcnow()))
    session.commit()
    return bool(getattr(done, "rowcount", 0))


def grace(session: Session) -> int:
    """A server starting gives the runners' runs a full heartbeat period (not committed):
    their runners' heartbeats failed while it was down, which says nothing of them."""
    done = session.execute(
        update(Run)
        .where(Run.state == "running", Run.handoff.is_not(None), Run.runner.is_not(None))
        .values(runner_expires_at=utcnow() + timedelta(seconds=HEARTBEAT_TTL))
        .execution_options(synchronize_session=False)
    )
    return int(getattr(done, "rowcount", 0) or 0)


def lost_runs(session: Session, now: datetime | None = None) -> list[Run]:
    """Runs whose runner stopped answering: each retried once (queued again, to be checked
    out afresh and handed to a runner or run by the server), or failed. Not committed."""
    now = now or utcnow()
    lost = session.scalars(
        select(Run)
        .where(
            Run.state == "running",
            Run.handoff.is_not(None),
            Run.runner.is_not(None),
            Run.runner_expires_at < now,
        )
        .with_for_update(skip_locked=True)
    ).all()
    for run in lost:
        runner = run.runner
        for step in run.steps:
            if step.attempt != run.attempt:
                continue
            if step.state == "running":
                step.state = INTERRUPTED
                step.reason = f"interrupted: runner {runner} stopped answering while it ran"
                step.finished_at = now
            elif step.state == "pending":
                step.state = "skipped"
        run.state, run.attempt, run.reason = after_loss(run.attempt, str(runner))
        if run.state == "queued":  # checked out afresh, handed off (or not) again
            run.handoff = None
            run.runner = None
            run.runner_expires_at = None
        else:
            run.finished_at = now
    return list(lost)


def source_sha(session: Session, run: Run) -> str:
    """The commit a runner checks out: the run's, or what its pull request's checkout
    tested (the forge's merge result when that was current)."""
    pull = session.get(PullRequestRun, run.id)
    return pull.tested_sha if pull is not None and pull.tested_sha else run.sha


def step_of(session: Session, step_id: int, runner: str, attempt: int) -> Step | None:
    """The step if its run is still this runner's at this attempt (and the step is of it)."""
    step = session.get(Step, step_id)
    if step is None or step.attempt != attempt:
        return None
    if held(session, step.run_id, runner, attempt) is None:
        return None
    return step


def cancel(session: Session, run: Run, reason: str) -> None:
    """Abort a handed-off run (not committed): its runner learns it at its next report (409)
    and stops its step."""
    now = utcnow()
    run.state = "cancelled"
    run.reason = reason
    run.finished_at = now
    end_unfinished_steps(run.steps, run.attempt, reason, now)
