"""The engine's side of runners: handing a run's steps to them, and sweeping up the runs
of runners that stopped answering (the records: pipeline/handoff.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from sqlalchemy.orm import Session

from conveyor.config import Config
from conveyor.config.migrationhash import migration_hash
from conveyor.pipeline import handoff
from conveyor.pipeline.records import RunContext, RunRecords
from conveyor.protocol.runners import ArtifactFacts, JobStep, RunEnd, RunnerJob, StepEnd
from conveyor.releases.artifact import BuiltArtifact
from conveyor.releases.store import ArtifactStore
from conveyor.store.models import Run, Step
from conveyor.threads import Wakeup, in_thread

log = logging.getLogger("conveyor.engine")

# a planned step: (id, kind, name, command, timeout, env)
Planned = tuple[int, str, str, str, float, dict[str, str]]


class RunnerDispatch(RunRecords):
    """Hands runs to runners (a base of `Engine`)."""

    _wake: Wakeup
    store: ArtifactStore
    _handoff_waiters: set[asyncio.Future[None]]

    def handed_off(self) -> None:
        """Wake the claims waiting on this server (on the event loop): a run was handed off."""
        for waiter in self._handoff_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._handoff_waiters.clear()

    async def next_handoff(self, timeout: float) -> None:
        """Wait until this server hands a run off, or `timeout` seconds (another server's
        hand-off is seen by the claim's next look, after the timeout)."""
        waiter = asyncio.get_running_loop().create_future()
        self._handoff_waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            self._handoff_waiters.discard(waiter)

    def _grace_runners(self) -> None:
        with self.sessions() as session:
            handoff.grace(session)
            session.commit()
        self.regrace = False

    # the database was away (store/outage.py): the runners' heartbeats failed meanwhile,
    # which says nothing of them; they get a whole period again before any sweep
    regrace = False

    def _interrupted(
        self, session: Session, runs: Sequence[Run], message: str, **extra: str
    ) -> None:
        """Say each run a lost server or runner left (requeued, or failed), and end those
        that failed (their notifications), in the caller's transaction."""
        for run in runs:
            log.warning(
                message,
                extra={
                    "run": run.id,
                    "state": run.state,
                    "attempt": run.attempt,
                    "reason": run.reason,
                    **extra,
                },
            )
            if run.state == "failed" and self.on_end is not None:
                self.on_end(session, run)

    def _sweep_runners(self) -> None:
        """Retry once, or fail, the runs of runners that stopped answering."""
        with self.sessions() as session:
            lost = handoff.lost_runs(session)
            self._interrupted(session, lost, "runner stopped answering")
            session.commit()
        if lost:
            self._wake.set()

    def _hand_off(
        self, ctx: RunContext, config: Config, steps: Sequence[Planned], last: int | None
    ) -> bool:
        """Hand the run's steps to the runners if they take them (handoff.dispatch); True
        when it did (the run then waits for a runner's claim)."""
        first_id = steps[0][0] if steps else last
        if first_id is None:
            return False
        with self.sessions() as session:
            live = handoff.live_runners(session)
            if handoff.dispatch(config.runs_on, len(live)) == "server":
                return False
            plan = handoff.make_plan(config, steps, last)
            reason = handoff.hand_off(session, session.get_one(Run, ctx.run_id), plan)
            first = session.get_one(Step, first_id)
            session.commit()
            self._note_in_log(first, f"{reason}\n")
        log.info("run handed to the runners", extra={"run": ctx.run_id, "reason": reason})
        return True

    # -- what runners report (server/api/runners.py) --------------------------

    def job_in(self, session: Session, run: Run) -> RunnerJob:
        """What the runner that claimed `run` needs (the secrets read now, never stored)."""
        plan = handoff.plan_of(run)
        ctx = self.context_in(session, run.id)
        wanted = set(plan.get("secrets", []))
        return RunnerJob(
            run=run.id,
            attempt=run.attempt,
            app=ctx.app,
            sha=run.sha,
            steps=[JobStep.model_validate(step) for step in plan["steps"]],
            artifact_step=plan.get("artifact_step"),
            include=plan.get("include", ["."]),
            exclude=plan.get("exclude", []),
            env=ctx.variables() | {k: v for k, v in ctx.secrets.items() if k in wanted},
            mask=list(ctx.secrets.values()),
            migration_files=plan.get("migration_files", []),
        )

    async def step_started(self, step_id: int, runner: str) -> None:
        await self._mark_running(step_id)
        await self._append_log(step_id, f"on runner {runner}\n")

    async def step_log(self, step_id: int, text: str) -> None:
        await self._append_log(step_id, text)

    async def step_ended(self, step_id: int, end: StepEnd) -> None:
        await self._end_step(step_id, end.state, end.reason, exit_code=end.exit_code)

    async def run_ended(self, run_id: int, end: RunEnd) -> None:
        await self._end_run(run_id, end.state, end.reason)

    async def artifact_refused(self, run_id: int, step_id: int, reason: str) -> None:
        await self._append_log(step_id, f"{reason}\n")
        await self._end_step(step_id, "failed", reason)
        await self._end_run(run_id, "failed", reason)

    async def artifact_accepted(
        self, run_id: int, step_id: int, built: BuiltArtifact, facts: ArtifactFacts
    ) -> str:
        """Record the release of an uploaded artifact (already in the store) and end the run."""
        ctx, config, files = await in_thread(self._release_inputs, run_id)
        digest = migration_hash(
            config,
            sql=facts.sql_digest,
            files={name: facts.migration_files.get(name) for name in files},
            artifact=built.sha256,
        )
        release_id = await self._record_release(ctx, config, built, digest)
        await self._append_log(
            step_id,
            f"release {release_id}: {built.files} files, {built.size} bytes, "
            f"sha256 {built.sha256} (checked on upload)\n",
        )
        await self._end_step(step_id, "succeeded")
        await self._end_run(run_id, "succeeded", None, release_id=release_id)
        return release_id

    def _release_inputs(self, run_id: int) -> tuple[RunContext, Config, list[str]]:
        with self.sessions() as session:
            run = session.get_one(Run, run_id)
            plan = handoff.plan_of(run)
            config = Config.model_validate_json(plan["config"])
            return self.context_in(session, run_id), config, list(plan["migration_files"])
