"""Database rows to wire models."""

from __future__ import annotations

from datetime import datetime

from conveyor.protocol import (
    AppOut,
    CommitStatusOut,
    PullRequestOut,
    ReleaseOut,
    RunOut,
    StepOut,
)
from conveyor.store.models import App, Release, Run, Step


def _duration(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def app_out(app: App) -> AppOut:
    return AppOut(
        name=app.name,
        repo=app.repo_url,
        branch=app.branch,
        poll_interval=app.poll_interval,
        created_at=app.created_at,
        public_status=app.public_status,
        forge_api=app.forge_api,
    )


def step_out(step: Step) -> StepOut:
    return StepOut(
        id=step.id,
        attempt=step.attempt,
        position=step.position,
        kind=step.kind,
        name=step.name,
        command=step.command,
        state=step.state,
        exit_code=step.exit_code,
        reason=step.reason,
        started_at=step.started_at,
        finished_at=step.finished_at,
        duration=_duration(step.started_at, step.finished_at),
    )


def run_out(run: Run, *, steps: bool = False, statuses: bool | None = None) -> RunOut:
    """A run; `steps` with its steps, `statuses` (default: as `steps`) with the commit
    statuses of its pull request."""
    return RunOut(
        id=run.id,
        app=run.app.name,
        sha=run.sha,
        ref=run.ref,
        trigger=run.trigger,
        triggered_by=run.triggered_by,
        state=run.state,
        reason=run.reason,
        attempt=run.attempt,
        release=run.release_id,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        duration=_duration(run.started_at, run.finished_at),
        steps=[step_out(s) for s in run.steps] if steps else [],
        committed_at=run.committed_at,
        commit_author=run.commit_author,
        commit_message=run.commit_message,
        pull_request=pull_request_out(run, statuses=steps if statuses is None else statuses),
        runner=run.runner,
    )


def pull_request_out(run: Run, *, statuses: bool) -> PullRequestOut | None:
    pull = run.pull_request
    if pull is None:
        return None
    return PullRequestOut(
        forge=pull.forge,
        project=pull.project,
        number=pull.number,
        title=pull.title,
        url=pull.url,
        head_sha=pull.head_sha,
        tested_sha=pull.tested_sha,
        statuses=[
            CommitStatusOut(
                state=s.state,
                description=s.description,
                target_url=s.target_url,
                outcome=s.outcome,
                http_status=s.http_status,
                error=s.error,
                attempts=s.attempts,
                created_at=s.created_at,
            )
            for s in run.commit_statuses
        ]
        if statuses
        else [],
    )


def release_out(release: Release) -> ReleaseOut:
    return ReleaseOut(
        id=release.id,
        app=release.app.name,
        sha=release.sha,
        run=release.run_id,
        sha256=release.sha256,
        size=release.size,
        created_at=release.created_at,
        migration_hash=release.migration_hash,
    )
