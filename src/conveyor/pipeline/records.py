"""What the pipeline engine records of a run: its files, its steps and its end.

Each record is a short transaction, committed before the side effect it announces;
the blocking ones are `@offloaded` (run by `in_thread`), off the event loop.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from conveyor.config import Config
from conveyor.pipeline import git
from conveyor.pipeline.process import STEP_MARKER, step_marker
from conveyor.pipeline.pulls import PullCheckout
from conveyor.pipeline.runs import end_unfinished_steps
from conveyor.releases.artifact import BuiltArtifact
from conveyor.store.models import App, PullRequestRun, Release, Run, Step, utcnow
from conveyor.store.secrets import secret_values
from conveyor.threads import offloaded

log = logging.getLogger("conveyor.engine")


@dataclass(frozen=True)
class Paths:
    """Where the engine keeps its files under the server's data directory."""

    data: Path

    @property
    def artifacts(self) -> Path:
        return self.data / "artifacts"

    def mirror(self, app: str) -> Path:
        return self.data / "repos" / f"{app}.git"

    def workspace(self, run_id: int) -> Path:
        return self.data / "work" / f"run-{run_id}"

    def log_file(self, run_id: int, attempt: int, position: int, name: str) -> str:
        slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", name).strip("-")[:40] or "step"
        return f"logs/run-{run_id}/{attempt}-{position:02d}-{slug}.log"


@dataclass
class RunContext:
    run_id: int
    attempt: int
    app: str
    repo_url: str
    branch: str
    sha: str
    ref: str
    secrets: dict[str, str]
    data: Path
    pull: PullCheckout | None = None  # a pull request's run: tests only

    def environment(self, step_id: int) -> dict[str, str]:
        # the server's own CONVEYOR_* settings (its admin token) never reach a step
        base = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        return base | self.variables() | {STEP_MARKER: step_marker(self.data, step_id)}

    def variables(self) -> dict[str, str]:
        """What a step learns of its run (a runner's steps too)."""
        base = {} if self.pull is None else {"CONVEYOR_PULL_REQUEST": str(self.pull.number)}
        return base | {
            "CI": "true",
            "CONVEYOR": "true",
            "CONVEYOR_APP": self.app,
            "CONVEYOR_SHA": self.sha,
            "CONVEYOR_SHORT_SHA": self.sha[:7],
            "CONVEYOR_BRANCH": self.branch,
            "CONVEYOR_REF": self.ref,
            "CONVEYOR_RUN": str(self.run_id),
        }


class RunRecords:
    """The engine's record keeping (a base of `Engine`)."""

    sessions: sessionmaker[Session]
    paths: Paths
    on_release: Callable[[Session, Run], None] | None
    on_end: Callable[[Session, Run], None] | None

    @offloaded
    def _context(self, run_id: int) -> RunContext:
        with self.sessions() as session:
            return self.context_in(session, run_id)

    def context_in(self, session: Session, run_id: int) -> RunContext:
        """A run's context, read in this session."""
        run = session.get_one(Run, run_id)
        app = run.app
        row = session.get(PullRequestRun, run_id)
        pull = (
            PullCheckout(row.number, row.head_sha, row.head_ref, row.merge_ref)
            if row is not None
            else None
        )
        return RunContext(
            run_id=run.id,
            attempt=run.attempt,
            app=app.name,
            repo_url=app.repo_url,
            branch=app.branch,
            sha=run.sha,
            ref=run.ref or "",
            # a pull request's code is not trusted with the app's secrets (a fork's
            # could print them): its steps get none
            secrets={} if pull else secret_values(session, app, None),
            data=self.paths.data,
            pull=pull,
        )

    @offloaded
    def _record_release(
        self, ctx: RunContext, config: Config, built: BuiltArtifact, migration_hash: str | None
    ) -> str:
        with self.sessions() as session:
            # a retry after a crash between this commit and the run's end reuses the release
            existing = session.scalar(select(Release).where(Release.run_id == ctx.run_id))
            if existing is not None:
                return existing.id
            count = (
                session.scalar(
                    select(func.count())
                    .select_from(Release)
                    .where(Release.app.has(App.name == ctx.app), Release.sha == ctx.sha)
                )
                or 0
            )
            run = session.get_one(Run, ctx.run_id)
            release = Release(
                id=f"{ctx.sha[:7]}-{count + 1}",
                app_id=run.app_id,
                sha=ctx.sha,
                run_id=ctx.run_id,
                sha256=built.sha256,
                size=built.size,
                config=config.model_dump_json(),
                migration_hash=migration_hash,
            )
            session.add(release)
            session.commit()
            return release.id

    # -- record keeping (each a short transaction, committed before acting) -

    @offloaded
    def _add_step(
        self,
        ctx: RunContext,
        position: int,
        kind: str,
        name: str,
        command: str | None,
        timeout: float | None,
        *,
        state: str = "pending",
    ) -> int:
        with self.sessions() as session:
            step = Step(
                run_id=ctx.run_id,
                attempt=ctx.attempt,
                position=position,
                kind=kind,
                name=name,
                command=command,
                timeout=timeout,
                state=state,
                log_path=self.paths.log_file(
                    ctx.run_id,
                    ctx.attempt,
                    position,
                    f"{kind}-{name}" if kind in ("test", "build") else kind,
                ),
                started_at=utcnow() if state == "running" else None,
            )
            session.add(step)
            session.commit()
            (self.paths.data / str(step.log_path)).parent.mkdir(parents=True, exist_ok=True)
            return step.id

    def _step_log(self, step_id: int) -> str:
        with self.sessions() as session:
            return str(session.get_one(Step, step_id).log_path)

    @offloaded
    def _append_log(self, step_id: int, text: str) -> None:
        path = self.paths.data / self._step_log(step_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)

    @offloaded
    def _mark_running(self, step_id: int) -> None:
        with self.sessions() as session:
            step = session.get_one(Step, step_id)
            step.state = "running"
            step.started_at = utcnow()
            session.commit()

    @offloaded
    def _record_pid(self, step_id: int, pid: int) -> None:
        with self.sessions() as session:
            session.get_one(Step, step_id).pid = pid
            session.commit()

    @offloaded
    def _end_step(
        self, step_id: int, state: str, reason: str | None = None, *, exit_code: int | None = None
    ) -> None:
        with self.sessions() as session:
            step = session.get_one(Step, step_id)
            step.state = state
            step.reason = reason
            step.exit_code = exit_code
            if state != "skipped":
                step.finished_at = utcnow()
            session.commit()

    @offloaded
    def _set_commit(self, run_id: int, sha: str, commit: git.Commit | None) -> None:
        with self.sessions() as session:
            run = session.get_one(Run, run_id)
            run.sha = sha
            if commit is not None:
                run.committed_at = commit.committed_at
                run.commit_author = commit.author[:255] or None
                run.commit_message = commit.message or None
            session.commit()

    @offloaded
    def _record_tested(self, run_id: int, sha: str) -> None:
        with self.sessions() as session:
            row = session.get(PullRequestRun, run_id)
            if row is not None:
                row.tested_sha = sha
                session.commit()

    @offloaded
    def _end_run(
        self, run_id: int, state: str, reason: str | None, *, release_id: str | None = None
    ) -> None:
        with self.sessions() as session:
            run = session.get_one(Run, run_id)
            run.state = state
            run.reason = reason
            run.release_id = release_id
            run.finished_at = utcnow()
            for step in end_unfinished_steps(run.steps, run.attempt, reason, run.finished_at):
                self._note_in_log(step, f"{reason}\n")
            if state == "succeeded" and release_id is not None and self.on_release is not None:
                self.on_release(session, run)
            if self.on_end is not None:
                self.on_end(session, run)
            session.commit()
        log.info("run finished", extra={"run": run_id, "state": state, "reason": reason})

    def _note_in_log(self, step: Step, text: str) -> None:
        if step.log_path is None:
            return
        try:
            with open(self.paths.data / step.log_path, "a", encoding="utf-8") as fh:
                fh.write(text)
        except OSError:
            log.exception("cannot write a step log", extra={"step": step.id})
