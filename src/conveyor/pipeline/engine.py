"""The pipeline engine: takes queued runs through checkout, test, build and artifact.

Every state change is committed before the side effect it announces, so that a
server killed at any moment restarts from a record that tells what was underway.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from sqlalchemy.orm import Session, sessionmaker

from conveyor.config import Config, ConfigError, load_config
from conveyor.config.migrationhash import command_files, migration_hash
from conveyor.pipeline import git
from conveyor.pipeline.claims import hold_run, orphaned_runs
from conveyor.pipeline.dispatching import RunnerDispatch
from conveyor.pipeline.masking import Masker
from conveyor.pipeline.polling import RepositoryPoller
from conveyor.pipeline.process import (
    SHELL,
    StepResult,
    find_step_processes,
    kill_processes,
    lint_command,
    run_step,
    step_marker,
    step_outcome,
)
from conveyor.pipeline.pulls import checkout_pull
from conveyor.pipeline.records import Paths, RunContext
from conveyor.pipeline.runs import interrupted_steps, next_runnable, recover_runs
from conveyor.releases.artifact import ArtifactError, build_artifact
from conveyor.releases.store import ArtifactStore
from conveyor.sqllint.sources import SQL_DIGEST_ENV
from conveyor.store.cluster import Cluster
from conveyor.store.models import Run, utcnow
from conveyor.store.outage import OUTAGE, is_unavailable
from conveyor.threads import Wakeup, call_on_loop, in_thread

log = logging.getLogger("conveyor.engine")

CONFIG_FILE = "conveyor.yml"
LINT_TIMEOUT = 600.0  # the migrations lint, its `migrations.sql` command included
RECOVER_EVERY = 5.0  # seconds between two looks for runs of a dead server (several servers)
SWEEP_EVERY = 2.0  # seconds between two looks for runs of a runner that stopped answering


class Engine(RunnerDispatch, RepositoryPoller):
    """Schedules queued runs (one per app at a time) and polls repositories."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        data_dir: Path,
        *,
        parallel: int = 2,
        on_release: Callable[[Session, Run], None] | None = None,
        on_end: Callable[[Session, Run], None] | None = None,
    ) -> None:
        self.sessions = sessions
        # called in the transaction that ends a run with a release: the promotion starts
        # in the same commit, so a crash cannot lose it
        self.on_release = on_release
        # called in the transaction that ends any run (notifications are queued there)
        self.on_end = on_end
        self.paths = Paths(data_dir)
        self.store = ArtifactStore(self.paths.artifacts)
        self.parallel = parallel
        self._wake = Wakeup()  # set from request threads and the background threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._cancels: dict[int, asyncio.Event] = {}
        self._polling: set[int] = set()
        self._stopping = False
        self.cluster: Cluster | None = None  # several servers on one database
        self._handoff_waiters: set[asyncio.Future[None]] = set()  # claims (dispatching.py)

    # -- scheduling ---------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, run_id: int) -> bool:
        """Abort a run underway (callable from any thread)."""
        event = self._cancels.get(run_id)
        if event is None:
            return False
        call_on_loop(self._loop, event.set)
        return True

    def recover(self, only: list[int] | None = None, cause: str = "the server stopped") -> None:
        """Stop what a killed server left running, and requeue or fail its runs.

        With several servers on one database: only the runs whose server died (its
        liveness lock is gone, store/cluster.py), whenever that is seen. `only`: these
        runs (of this server, which lost the database while they ran).
        """
        with self.sessions() as session:
            if only is None and self.cluster is not None:
                only = orphaned_runs(session, set(self._tasks))
            if only == []:
                return
            steps = interrupted_steps(session, only)
            leftovers = find_step_processes({step_marker(self.paths.data, s.id) for s in steps})
            if leftovers:
                log.warning("stopping processes of interrupted steps", extra={"pids": leftovers})
                kill_processes(leftovers)
            self._interrupted(
                session, recover_runs(session, only, cause), "run interrupted", cause=cause
            )
            session.commit()

    async def serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake.bind()
        await in_thread(self.recover)
        await in_thread(self._grace_runners)  # their heartbeats failed while it was down
        recovered = swept = time.monotonic()
        while not self._stopping:
            away = None
            try:
                if self.regrace:
                    await in_thread(self._grace_runners)
                if self.cluster is not None and time.monotonic() - recovered >= RECOVER_EVERY:
                    recovered = time.monotonic()
                    await in_thread(self.recover)  # runs of a server that died meanwhile
                if time.monotonic() - swept >= SWEEP_EVERY:
                    swept = time.monotonic()
                    await in_thread(self._sweep_runners)
                await self._start_runnable()
                await self._poll_due()
                OUTAGE.answered()
            except Exception as exc:
                away = OUTAGE.turn_failed(exc, "run engine")
                self.regrace = self.regrace or away is not None
                if away is None:
                    log.exception("engine loop error")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=away or 1.0)

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for run_id in list(self._cancels):
            self._cancels[run_id].set()
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=10)

    async def _start_runnable(self) -> None:
        free = self.parallel - len(self._tasks)
        if free <= 0:
            return
        for run_id in await in_thread(self._take_runnable, free):
            self._cancels[run_id] = asyncio.Event()
            task = asyncio.create_task(self._execute(run_id), name=f"run-{run_id}")
            self._tasks[run_id] = task
            task.add_done_callback(functools.partial(self._finished, run_id))

    def _take_runnable(self, free: int) -> list[int]:
        """Mark up to `free` queued runs running; their ids."""
        with self.sessions() as session:
            runs = next_runnable(session, free)
            for run in runs:
                run.state = "running"
                run.started_at = run.started_at or utcnow()
                if self.cluster is not None:  # who runs it, in the same commit
                    hold_run(session, run.id, self.cluster.holder)
            session.commit()
            return [r.id for r in runs]

    def _finished(self, run_id: int, task: object = None) -> None:
        if task is None or self._tasks.get(run_id) is task:  # not a retry started meanwhile
            self._tasks.pop(run_id, None)
            self._cancels.pop(run_id, None)
        self._wake.set()

    # -- one run ------------------------------------------------------------

    async def _execute(self, run_id: int) -> None:
        outage = None
        try:
            await self._execute_run(run_id)
        except Exception as exc:  # an engine bug must not leave a run running forever
            if is_unavailable(exc):
                outage = exc
            else:
                log.exception("run crashed", extra={"run": run_id})
                await self._end_run(run_id, "failed", f"internal error: {exc}")
        finally:
            await in_thread(shutil.rmtree, self.paths.workspace(run_id), ignore_errors=True)
            await in_thread(self._sql_digest_file(run_id).unlink, missing_ok=True)
        if outage is not None:  # its workspace gone first: a retry starts from a clean one
            await self._after_outage(run_id, outage)

    async def _after_outage(self, run_id: int, exc: Exception) -> None:
        """The database went away mid-run (nothing half-written: each record is one
        transaction): once it is back, the run is recovered as a killed server's is,
        retried once from a clean checkout or failed (a stopping server's next start does)."""
        while not self._stopping:
            await asyncio.sleep(OUTAGE.turn_failed(exc, f"run {run_id}") or 1.0)
            try:
                return await in_thread(self.recover, [run_id], "the database went away")
            except Exception as again:
                if not is_unavailable(again):
                    raise
                exc = again

    async def _execute_run(self, run_id: int) -> None:
        cancel = self._cancels[run_id]
        ctx = await self._context(run_id)
        masker = Masker(ctx.secrets.values())
        log.info("run started", extra={"run": run_id, "app": ctx.app, "sha": ctx.sha})
        workspace = self.paths.workspace(run_id)
        config = await self._checkout_step(ctx, workspace, masker)
        if config is None:
            return

        # test and build steps, then the artifact, all recorded before any starts; a pull
        # request's run has its test steps only: it never builds a release
        planned = _plan(config, tests_only=ctx.pull is not None)
        step_ids = [
            await self._add_step(ctx, i + 1, step.kind, step.name, step.command, step.timeout)
            for i, step in enumerate(planned)
        ]
        artifact_step = (
            await self._add_step(ctx, len(planned) + 1, "artifact", "artifact", None, None)
            if ctx.pull is None
            else None
        )
        # or the runners run them (pipeline/handoff.py)
        handed = [(i, *step) for i, step in zip(step_ids, planned, strict=True)]
        if await in_thread(self._hand_off, ctx, config, handed, artifact_step):
            self.handed_off()
            return
        wanted = set(config.service.secret_names) if config.service else set()
        secret_env = {k: v for k, v in ctx.secrets.items() if k in wanted}
        for index, (sid, step) in enumerate(zip(step_ids, planned, strict=True)):
            env = ctx.environment(sid) | step.env | secret_env
            if step.kind == "lint":  # where it leaves the digest of the SQL it read
                env[SQL_DIGEST_ENV] = str(self._sql_digest_file(run_id))
            result = await self._run_one(sid, step, workspace, env, masker, cancel)
            if result.ok:
                await self._end_step(sid, "succeeded", exit_code=0)
                continue
            if result.cancelled and self._stopping:
                # a graceful stop: leave the records as they are, the next start retries
                return
            state, reason = step_outcome(result, step.kind, step.name, step.timeout)
            await self._end_step(sid, state, reason, exit_code=result.exit_code)
            for later in [*step_ids[index + 1 :], artifact_step]:
                if later is not None:
                    await self._end_step(later, "skipped")
            await self._end_run(run_id, state, reason)
            return
        if artifact_step is None:
            await self._end_run(run_id, "succeeded", None)
            return
        await self._artifact_step(ctx, config, workspace, artifact_step, masker, cancel)

    def _sql_digest_file(self, run_id: int) -> Path:
        """Beside the run's checkout, not in it (it would join the artifact)."""
        return self.paths.workspace(run_id).with_name(f"run-{run_id}.sql-digest")

    async def _checkout_step(
        self, ctx: RunContext, workspace: Path, masker: Masker
    ) -> Config | None:
        """Check the commit out and load its config; None when the run has ended failed."""
        step_id = await self._add_step(ctx, 0, "checkout", "checkout", None, None, state="running")
        try:
            sha, line = await self._checkout(ctx, workspace)
            await self._set_commit(ctx.run_id, sha, await git.commit_details(workspace, sha))
            ctx.sha = sha
            # a hostile conveyor.yml costs up to a second or two to refuse: not on the loop
            config = await asyncio.to_thread(load_config, workspace / CONFIG_FILE)
        except (git.GitError, ConfigError, FileNotFoundError) as exc:
            reason = (
                f"{CONFIG_FILE} is invalid"
                if isinstance(exc, ConfigError)
                else f"{CONFIG_FILE} not found at the repository root"
                if isinstance(exc, FileNotFoundError)
                else "checkout failed"
            )
            await self._append_log(step_id, masker(f"{exc}\n"))
            await self._end_step(step_id, "failed", reason)
            await self._end_run(ctx.run_id, "failed", reason)
            return None
        await self._append_log(step_id, f"{line}\n")
        await self._end_step(step_id, "succeeded")
        return config

    async def _run_one(
        self,
        sid: int,
        step: _PlannedStep,
        workspace: Path,
        env: dict[str, str],
        masker: Masker,
        cancel: asyncio.Event,
    ) -> StepResult:
        await self._mark_running(sid)
        await self._append_log(sid, masker(f"$ {step.command}\n"))
        return await run_step(
            [*SHELL, step.command],
            cwd=workspace,
            env=env,
            log_path=self.paths.data / await in_thread(self._step_log, sid),
            masker=masker,
            timeout=step.timeout,
            on_start=functools.partial(self._record_pid, sid),
            cancel=cancel,
        )

    async def _artifact_step(
        self,
        ctx: RunContext,
        config: Config,
        workspace: Path,
        artifact_step: int,
        masker: Masker,
        cancel: asyncio.Event,
    ) -> None:
        run_id = ctx.run_id
        if cancel.is_set() and not self._stopping:
            await self._end_step(artifact_step, "skipped")
            await self._end_run(run_id, "cancelled", "aborted before the artifact was built")
            return
        await self._mark_running(artifact_step)
        try:
            release_id = await self._build_release(ctx, config, workspace, artifact_step)
        except (ArtifactError, OSError) as exc:
            await self._append_log(artifact_step, masker(f"{exc}\n"))
            await self._end_step(artifact_step, "failed", f"artifact failed: {exc}")
            await self._end_run(run_id, "failed", f"artifact failed: {exc}")
            return
        await self._end_step(artifact_step, "succeeded")
        await self._end_run(run_id, "succeeded", None, release_id=release_id)

    async def _checkout(self, ctx: RunContext, workspace: Path) -> tuple[str, str]:
        """Check the run's commit out: its sha (a pull request's head), and a log line."""
        mirror = self.paths.mirror(ctx.app)
        if ctx.pull is not None:
            tested, line = await checkout_pull(mirror, ctx.repo_url, ctx.pull, workspace)
            await self._record_tested(ctx.run_id, tested)
            return ctx.pull.head_sha, line
        await git.update_mirror(mirror, ctx.repo_url)
        sha = await git.resolve(mirror, ctx.sha or f"refs/heads/{ctx.branch}")
        await git.checkout(mirror, sha, workspace)
        return sha, f"checked out {sha}"

    async def _build_release(
        self, ctx: RunContext, config: Config, workspace: Path, step_id: int
    ) -> str:
        tmp = self.paths.artifacts / "tmp" / f"run-{ctx.run_id}.tar.gz"
        include, exclude = list(config.artifact.include), list(config.artifact.exclude)
        built = await asyncio.to_thread(build_artifact, workspace, include, exclude, tmp)
        await asyncio.to_thread(self.store.put, built.path, built.sha256)
        digest = await asyncio.to_thread(
            release_migration_hash,
            config,
            workspace,
            self._sql_digest_file(ctx.run_id),
            built.sha256,
        )
        release_id = await self._record_release(ctx, config, built, digest)
        await self._append_log(
            step_id,
            f"release {release_id}: {built.files} files, {built.size} bytes, "
            f"sha256 {built.sha256}\n",
        )
        log.info(
            "release built",
            extra={"run": ctx.run_id, "release": release_id, "sha256": built.sha256},
        )
        return release_id


def release_migration_hash(
    config: Config, workspace: Path, sql_digest: Path, artifact: str
) -> str | None:
    """The content hash of what the release's migrations run (deploy/migrationgate.py):
    the lint step left the digest of the SQL it read in `sql_digest`."""
    sql = None
    if config.migrations.sql is not None and sql_digest.is_file():
        sql = sql_digest.read_text(encoding="utf-8").strip() or None
    root = workspace.resolve()
    files: dict[str, str | None] = {}
    for name in command_files(config):
        path = (workspace / name).resolve()
        try:
            inside = path.is_relative_to(root) and path.is_file()
            files[name] = hashlib.sha256(path.read_bytes()).hexdigest() if inside else None
        except OSError:
            files[name] = None
    return migration_hash(config, sql=sql, files=files, artifact=artifact)


def _short(command: str) -> str:
    first = command.strip().splitlines()[0] if command.strip() else "step"
    return first if len(first) <= 60 else first[:57] + "..."


class _PlannedStep(NamedTuple):
    kind: str
    name: str
    command: str
    timeout: float
    env: dict[str, str]


def _plan(config: Config, *, tests_only: bool = False) -> list[_PlannedStep]:
    """The test then build steps of a config, in order, then the lint of its migrations'
    SQL (`migrations.sql`): its findings fail the run before the release is built.
    `tests_only` (a pull request's run): the test steps alone."""
    kinds = (
        (("test", config.test),) if tests_only else (("test", config.test), ("build", config.build))
    )
    planned = [
        _PlannedStep(
            kind, step.name or _short(step.run), step.run, step.timeout, dict(step.env or {})
        )
        for kind, steps in kinds
        for step in steps
    ]
    if config.migrations.sql is not None and not tests_only:
        # the lint runs as `conveyor migrations lint` does on a laptop, from this server's
        # own install, in the checkout (after the build: `alembic ... --sql` may need it)
        command = lint_command()
        planned.append(_PlannedStep("lint", "migrations", command, LINT_TIMEOUT, {}))
    return planned
