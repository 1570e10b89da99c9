"""The deployment engine: starts queued deployments under their gates and drives their steps.

Each state change is committed before the action it announces: a step's desired
state is written (and its generation per host recorded) before any agent is
woken, so a server killed at any moment restarts with a record that says what
each host was asked to run, and continues from there or rolls back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from conveyor.analysis.judge import (
    JudgeState,
    Look,
    Settings,
    decide,
    observe,
    start_window,
)
from conveyor.analysis.prometheus import PrometheusSource
from conveyor.analysis.sources import MetricSource, RouterSource, SourceError
from conveyor.config import Analysis, Config, Environment, Prometheus
from conveyor.config.environment import HostsCommand
from conveyor.deploy import bluegreen, canary, checks, rolling
from conveyor.deploy.control import Next, StepWatch, next_action, no_traffic_after, watched
from conveyor.deploy.desired import Notifier, set_host_app
from conveyor.deploy.gates import GateError, environment, waiting_for
from conveyor.deploy.judging import carried_judge, series_point
from conveyor.deploy.plan import Context, PlannedStep, Targets, rollback_targets
from conveyor.deploy.progress import HostView, Progress, host_progress
from conveyor.deploy.records import ACTING, PENDING, continue_chain
from conveyor.notify import Announcer
from conveyor.protocol import (
    ObservedState,
    ReleaseCounters,
    ReleaseWeight,
    RouterMetrics,
    StepControl,
)
from conveyor.releases.store import ArtifactStore
from conveyor.store.locking import lock_for_writing
from conveyor.store.models import App, Deployment, DeploymentStep, Host, Release, utcnow
from conveyor.store.steps import append_log, set_detail
from conveyor.threads import Wakeup, in_thread, offloaded

log = logging.getLogger("conveyor.deploy")

STRATEGIES: dict[str, Callable[[Context], list[PlannedStep]]] = {
    "rolling": rolling.plan,
    "blue-green": bluegreen.plan,
    "canary": canary.plan,
}
TICK = 0.25
OFFLINE_AFTER = 15.0  # seconds without a word from an agent (as /api/hosts says)
# how long a host may stay unreachable, counted from when this server process first saw
# it so, before a deployment gives up on it (a restarted server gives agents time to return)
OFFLINE_GRACE = float(os.environ.get("CONVEYOR_OFFLINE_GRACE", "20"))
CONVERGE_MARGIN = 120.0  # on top of the health timeout: download, unpack, install hook
ROLLBACK_WAIT = 120.0  # how long a rollback waits for hosts before recording what it reached
FAILURE_CONFIRM = 1.0  # a failure must still be reported this much later (not a stale report)
LOOK_EVERY = 1.0  # seconds between two looks of the judge at a step's counters
CRASH_ENV = "CONVEYOR_CRASH_AFTER_STEPS"  # tests: SIGKILL the server after N persisted changes


class DeployEngine:
    """Schedules deployments (one per environment) and drives each as an asyncio task."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        data_dir: Path,
        notifier: Notifier,
        store: ArtifactStore,
        mirror: Callable[[str], Path],
        announcer: Announcer | None = None,
    ) -> None:
        self.sessions = sessions
        # queues notifications in the transaction of the change (self.notifier wakes agents)
        self.announcer = announcer
        self.data = data_dir
        self.notifier = notifier
        self.store = store
        self.mirror = mirror
        self._wake = Wakeup()  # set from request threads and the engines' threads
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._stopping = False
        self._failures_seen: dict[tuple[int, str], float] = {}
        self._offline_seen: dict[tuple[int, str], float] = {}
        crash = os.environ.get(CRASH_ENV)
        self._crash_after = int(crash) if crash and crash.isdigit() else None
        self._persisted = 0
        self.router_source = RouterSource(self._router_metrics)
        # one per server and queries: each keeps running totals across router restarts
        self._prometheus: dict[Prometheus, PrometheusSource] = {}

    def metric_source(self, analysis: Analysis) -> MetricSource:
        """Where the judge reads the counters of an environment's releases."""
        setting = analysis.source
        if not isinstance(setting, Prometheus):
            return self.router_source
        found = self._prometheus.get(setting)
        if found is None:
            queries = setting.queries.model_dump()
            found = self._prometheus[setting] = PrometheusSource(setting.prometheus, queries)
        return found

    def _router_metrics(self, hosts: list[str]) -> dict[str, RouterMetrics | None]:
        with self.sessions() as session:
            views = _views(session, hosts)
        return {n: v.observed.metrics if v.observed else None for n, v in views.items()}

    def wake(self) -> None:
        self._wake.set()

    async def serve(self) -> None:
        self._wake.bind()
        while not self._stopping:
            try:
                await self._schedule()
            except Exception:
                log.exception("deployment scheduler error")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for task in self._tasks.values():
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=10)

    def _committed(self, what: str, **extra: Any) -> None:
        """After each persisted change; a test may ask the server to die right here."""
        self._persisted += 1
        log.info(what, extra=extra | {"persisted": self._persisted})
        if self._crash_after is not None and self._persisted >= self._crash_after:
            log.warning("crashing on purpose", extra={"after": self._persisted})
            os.kill(os.getpid(), signal.SIGKILL)

    # -- scheduling ---------------------------------------------------------

    async def _schedule(self) -> None:
        starting, ids = await in_thread(self._pending)
        for deployment_id in starting:
            await self._start(deployment_id)
            ids.append(deployment_id)
        for deployment_id in ids:
            if deployment_id not in self._tasks and not self._stopping:
                task = asyncio.create_task(
                    self._drive(deployment_id), name=f"deploy-{deployment_id}"
                )
                self._tasks[deployment_id] = task
                task.add_done_callback(functools.partial(self._finished, deployment_id))

    def _pending(self) -> tuple[list[int], list[int]]:
        """Gate the pending deployments: (the ids that may start, the ids acting)."""
        starting: list[int] = []
        with self.sessions() as session:
            # decide under the write lock of every app with a pending deployment: a deploy,
            # rollback or abort meanwhile is seen, not overwritten
            apps = session.scalars(
                select(Deployment.app_id).where(Deployment.state.in_(PENDING)).distinct()
            ).all()
            for app_id in sorted(apps):
                lock_for_writing(session, app_id)
            acting = session.scalars(select(Deployment).where(Deployment.state.in_(ACTING))).all()
            busy = {(d.app_id, d.environment) for d in acting}
            ids = [d.id for d in acting]
            pending = session.scalars(
                select(Deployment).where(Deployment.state.in_(PENDING)).order_by(Deployment.id)
            ).all()
            for d in pending:
                key = (d.app_id, d.environment)
                if key in busy:
                    if d.state != "queued" or d.reason is None:
                        d.state, d.reason = "queued", "waiting for the deployment in progress"
                    continue
                busy.add(key)
                try:
                    _, env = environment(d.release, d.environment)
                except GateError as exc:
                    self._end(d, "failed", str(exc))
                    continue
                why = waiting_for(d, env, datetime.now(UTC))
                if why is not None:
                    if d.state != "waiting" or d.reason != why:
                        d.state, d.reason = "waiting", why
                        if self.announcer is not None:
                            self.announcer.deployment_waiting(d)
                    continue
                starting.append(d.id)
            session.commit()
        return starting, ids

    def _finished(self, deployment_id: int, _task: object = None) -> None:
        self._tasks.pop(deployment_id, None)
        self._wake.set()

    async def _start(self, deployment_id: int) -> None:
        """Resolve the hosts, record what they run now, plan the steps: all before acting."""

        def read() -> tuple[Release, int, Config, Environment]:
            with self.sessions() as session:
                d = session.get_one(Deployment, deployment_id)
                release = d.release
                return (release, d.app_id, *environment(release, d.environment))

        release, app_id, config, env = await in_thread(read)
        problem: str | None = None
        try:
            names = await self._inventory(env, release, deployment_id)
        except GateError as exc:
            names, problem = [], str(exc)
        await in_thread(self._plan, deployment_id, app_id, names, problem, config, env)

    def _plan(
        self,
        deployment_id: int,
        app_id: int,
        names: list[str],
        problem: str | None,
        config: Config,
        env: Environment,
    ) -> None:
        with self.sessions() as session:
            # read and move it under the write lock: a deploy or rollback that supersedes,
            # cancels or aborts it meanwhile is seen, not overwritten
            lock_for_writing(session, app_id)
            d = session.get_one(Deployment, deployment_id)
            if d.state not in PENDING:
                return
            if problem is None:
                problem, offline = self._hosts_problem(session, names)
                if offline and not all(self._gone(d.id, h) for h in offline):
                    why = f"waiting for host(s) {', '.join(offline)} to connect"
                    if d.reason != why:
                        d.reason = why
                        session.commit()
                    return
            if problem is not None:
                self._end(d, "failed", problem)
                session.commit()
                self._committed("deployment refused", deployment=d.id, reason=problem)
                return
            hosts = {h.name: h for h in session.scalars(select(Host).where(Host.name.in_(names)))}
            previous: Targets = {}
            for name in names:
                row = next((r for r in hosts[name].apps if r.app_id == d.app_id), None)
                previous[name] = (
                    [ReleaseWeight.model_validate(r) for r in json.loads(row.releases)]
                    if row
                    else []
                )
            ctx = _context(d, names, previous, config, env)
            planned = (
                [ctx.switch_step()]
                if d.kind == "rollback"
                else STRATEGIES[env.strategy](ctx) + ctx.monitor_steps()
            )
            d.previous = json.dumps(
                {h: [r.model_dump() for r in items] for h, items in previous.items()}
            )
            d.previous_release = next((ctx.serving(h) for h in names if ctx.serving(h)), None)
            for i, step in enumerate(planned):
                d.steps.append(
                    DeploymentStep(
                        position=i,
                        kind=step.kind,
                        name=step.name,
                        targets=_dump_targets(step.targets),
                        weight=step.weight,
                        detail=json.dumps({"options": step.options()}),
                    )
                )
            d.state, d.reason, d.started_at = "running", None, utcnow()
            try:
                session.commit()
            except IntegrityError:
                # the database holds one acting deployment per environment: another
                # got there first (one more scheduler?); this one waits its turn
                session.rollback()
                log.warning("deployment not started", extra={"deployment": deployment_id})
                return
            self._committed(
                "deployment started",
                deployment=d.id,
                environment=d.environment,
                release=d.release_id,
                steps=len(planned),
            )

    async def _inventory(self, env: Environment, release: Release, deployment_id: int) -> list[str]:
        if isinstance(env.hosts, list):
            return list(env.hosts)
        command = env.hosts
        assert isinstance(command, HostsCommand)
        cwd = await self._release_files(release, deployment_id)
        result = await checks.run_script(command.command, cwd, {}, 60, [])
        if not result.ok:
            raise GateError(f"the hosts command failed, nothing changed: {result.line}")
        lines = result.line.split("\n", 1)[1].splitlines() if "\n" in result.line else []
        names = [line.strip() for line in lines if line.strip()]
        if not names:
            raise GateError(f"the hosts command {command.command!r} printed no host names")
        return list(dict.fromkeys(names))

    def _gone(self, deployment_id: int, host: str) -> bool:
        """Whether a host seen unreachable has stayed so for longer than the grace."""
        first = self._offline_seen.setdefault((deployment_id, host), time.monotonic())
        return time.monotonic() - first >= OFFLINE_GRACE

    def _back(self, deployment_id: int, host: str) -> None:
        self._offline_seen.pop((deployment_id, host), None)

    def _hosts_problem(self, session: Session, names: list[str]) -> tuple[str | None, list[str]]:
        """What stops these hosts from taking a deployment, and which are not connected."""
        rows = {h.name: h for h in session.scalars(select(Host).where(Host.name.in_(names)))}
        unknown = [n for n in names if n not in rows or rows[n].state == "revoked"]
        if unknown:
            return (
                f"unknown host(s) {', '.join(unknown)}: register them with `conveyor host add`; "
                "nothing changed"
            ), []
        now = utcnow()
        offline = [
            n
            for n in names
            if rows[n].state != "enrolled"
            or (seen := rows[n].last_seen) is None
            or (now - seen).total_seconds() > OFFLINE_AFTER
        ]
        if offline:
            return (
                f"host(s) not connected for {OFFLINE_GRACE:g} s: {', '.join(offline)}; "
                "nothing changed"
            ), offline
        return None, []

    async def _release_files(self, release: Release, deployment_id: int) -> Path:
        into = self.data / "work" / f"deploy-{deployment_id}"
        archive = self.store.path_for(release.sha256)
        return await asyncio.to_thread(checks.unpack_release, archive, into)

    # -- driving one deployment --------------------------------------------

    async def _drive(self, deployment_id: int) -> None:
        try:
            while not self._stopping:
                done = await self._advance(deployment_id)
                if done:
                    break
                await asyncio.sleep(TICK)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not leave hosts half-way: roll back
            log.exception("deployment crashed", extra={"deployment": deployment_id})
            await in_thread(self._crashed, deployment_id, exc)
        finally:
            await in_thread(self._clean_up, deployment_id)

    def _crashed(self, deployment_id: int, exc: Exception) -> None:
        with self.sessions() as session:
            d = session.get_one(Deployment, deployment_id)
            if d.state == "running":
                step = next((s for s in d.steps if s.state in ("pending", "running")), None)
                self._fail(session, d, step, f"internal error: {exc}")
                session.commit()

    def _clean_up(self, deployment_id: int) -> None:
        with self.sessions() as session:
            d = session.get(Deployment, deployment_id)
            ended = d is None or d.state not in ACTING
        if ended:
            shutil.rmtree(self.data / "work" / f"deploy-{deployment_id}", ignore_errors=True)

    async def _advance(self, deployment_id: int) -> bool:
        """One look at a deployment; acts at most once. True when it has ended."""
        look = await in_thread(self._look, deployment_id)
        if isinstance(look, bool):
            return look
        kind, step_id, env = look
        if kind == "verify":
            await self._verify(deployment_id, step_id, env)
            return False
        await self._watch(deployment_id, step_id, env)
        return False

    def _look(self, deployment_id: int) -> bool | tuple[str, int, Environment]:
        """The records' part of a look: ended (True), acted (False), or the step to watch."""
        with self.sessions() as session:
            d = session.get_one(Deployment, deployment_id)
            if d.state not in ACTING:
                return True
            if d.state == "aborting":
                step = next((s for s in d.steps if s.state in ("pending", "running")), None)
                self._fail(session, d, step, d.reason or "aborted", final="cancelled")
                session.commit()
                self._committed("deployment aborting", deployment=d.id)
                return False
            step = next((s for s in d.steps if s.state in ("pending", "running")), None)
            if step is None:
                return self._succeed(session, d)
            _, env = environment(d.release, d.environment)
            if step.state == "pending":
                return self._begin_step(session, d, step)
            return step.kind, step.id, env

    def _begin_step(self, session: Session, d: Deployment, step: DeploymentStep) -> bool:
        targets = _load_targets(step.targets)
        generations: dict[str, int] = {}
        app = session.get_one(App, d.app_id)
        for name, releases in targets.items():
            host = session.scalar(select(Host).where(Host.name == name))
            if host is None:
                self._fail(session, d, step, f"host {name} was removed during the deployment")
                session.commit()
                return False
            set_host_app(session, host, app, releases, sticky=False)
            generations[name] = host.generation
        touched = json.loads(d.touched)
        touched += [h for h in targets if h not in touched]
        d.touched = json.dumps(touched)
        # only its own key: a person may have paused or promoted the step meanwhile
        set_detail(session, step.id, {"generations": generations})
        step.state, step.started_at = "running", utcnow()
        session.commit()
        for name in targets:
            self.notifier.changed(name)
        self._committed("step started", deployment=d.id, step=step.name)
        return False

    async def _watch(self, deployment_id: int, step_id: int, env: Environment) -> None:
        """A step that wrote desired state: wait for the hosts, then checks and pause."""

        def read() -> _Watched:
            with self.sessions() as session:
                d = session.get_one(Deployment, deployment_id)
                step = session.get_one(DeploymentStep, step_id)
                detail = json.loads(step.detail)
                targets = _load_targets(step.targets)
                started = step.started_at or utcnow()
                return _Watched(
                    detail=detail,
                    targets=targets,
                    views=_views(session, list(targets)),
                    app_name=d.app.name,
                    release=d.release_id,
                    config=Config.model_validate_json(d.release.config or "{}"),
                    rollback=step.kind == "rollback",
                    step_name=step.name,
                    elapsed=(utcnow() - started).total_seconds(),
                )

        w = await in_thread(read)
        detail, targets, views, app_name, release, config = (
            w.detail,
            w.targets,
            w.views,
            w.app_name,
            w.release,
            w.config,
        )
        options = detail.get("options", {})
        generations: dict[str, int] = detail.get("generations", {})
        rollback, step_name, elapsed = w.rollback, w.step_name, w.elapsed
        assert config.service is not None
        states = {
            name: host_progress(views[name], app_name, generations.get(name, 0), items)
            for name, items in targets.items()
        }
        for name, (progress, _) in states.items():
            if progress != Progress.OFFLINE:
                self._back(deployment_id, name)
            elif not self._gone(deployment_id, name):
                states[name] = (Progress.WAITING, None)  # within the grace: wait for it
        if rollback:
            await self._watch_rollback(deployment_id, step_id, states, elapsed)
            return
        for name, (progress, message) in states.items():
            if progress == Progress.FAILED and self._confirmed_failure(step_id, name):
                await self._fail_now(deployment_id, step_id, message or f"failed on {name}")
                return
            if progress == Progress.OFFLINE:
                await self._fail_now(
                    deployment_id,
                    step_id,
                    f"host {name} lost its connection to the server during {step_name!r} "
                    f"(unreachable for {OFFLINE_GRACE:g} s)",
                )
                return
        waiting = [n for n, (p, _) in states.items() if p != Progress.CONVERGED]
        if waiting:
            limit = config.service.health.timeout + CONVERGE_MARGIN
            if elapsed > limit:
                errors = _host_errors(views, waiting, app_name)
                await self._fail_now(
                    deployment_id,
                    step_id,
                    f"host(s) {', '.join(waiting)} did not reach {step_name!r} within "
                    f"{limit:g} s" + (f": {errors}" if errors else ""),
                )
            return
        if options.get("checks") and not detail.get("checked"):
            urls = {n: u for n in targets if (u := views[n].url(config.service.port))}
            results = await checks.http_checks(
                env.verify, urls, preview=release if options.get("preview") else None
            )
            failed = [r.line for r in results if not r.ok]
            await self._log(step_id, [r.line for r in results])
            if failed:
                await self._fail_now(deployment_id, step_id, "check failed: " + "; ".join(failed))
                return
            await self._update_detail(step_id, checked=True)
        pause = float(options.get("pause") or 0)
        routers = [u for n in targets if (u := views[n].url(config.service.port))]
        if pause > 0 and not await self._watch_pause(
            deployment_id, step_id, env, list(targets), app_name, release, pause, routers
        ):
            return
        await self._end_step(deployment_id, step_id)

    async def _watch_pause(
        self,
        deployment_id: int,
        step_id: int,
        env: Environment,
        hosts: list[str],
        app: str,
        release: str,
        pause: float,
        urls: list[str],
    ) -> bool:
        """A canary step's pause or the watch window, judged; True once the step may end."""
        now = time.time()

        def read() -> tuple[dict[str, Any], bool, str | None, JudgeState | None]:
            with self.sessions() as session:
                step = session.get_one(DeploymentStep, step_id)
                d = session.get_one(Deployment, deployment_id)
                baseline = d.previous_release if d.previous_release != release else None
                return (
                    json.loads(step.detail),
                    step.kind == "monitor",
                    baseline,
                    carried_judge(d, step),
                )

        detail, monitor, baseline, carried = await in_thread(read)
        if "watch_from" not in detail:
            await self._update_detail(step_id, watch_from=now)
            return False
        control = StepControl.model_validate(detail.get("control") or {})
        analysis = env.analysis
        last = detail.get("judgement") or {}
        watch = StepWatch(
            pause=pause,
            watch_from=float(detail["watch_from"]),
            control=control,
            analysed=bool(detail.get("options", {}).get("analyse")) and analysis is not None,
            monitor=monitor,
            verdict=last.get("verdict"),
            conclusive=bool(last.get("conclusive")),
            early=analysis is not None and analysis.advance == "early",
        )
        if control.promoted_by is not None:
            await self._promoted(step_id, control, last)
            return True
        if analysis is None or not watch.analysed or now - float(last.get("at") or 0) < LOOK_EVERY:
            # between looks: the last word stands (sources change with agents' reports)
            return next_action(watch, now) == Next.END
        settings = Settings.of(analysis)
        # the judge's statistics need scipy, seconds to import: in a thread, not on the
        # event loop, and only in servers that judge something (a no-op once loaded)
        await asyncio.to_thread(importlib.import_module, "scipy.special")
        releases = [release] + ([baseline] if baseline else [])
        try:
            counters = await self.metric_source(analysis).read(app, releases, hosts)
        except SourceError as exc:
            if detail.get("source_error") != str(exc):
                await self._log(step_id, [f"metrics: {exc}"])
                await self._update_detail(step_id, source_error=str(exc))
            if watched(watch.watch_from, control, now) >= no_traffic_after(pause):
                await self._fail_now(deployment_id, step_id, f"metrics unavailable: {exc}")
            return False
        if "judge" in detail:
            state = JudgeState.model_validate(detail["judge"])
        else:
            state = start_window(carried) if carried else JudgeState()
        look = Look(
            at=now,
            canary=counters.get(release) or ReleaseCounters(),
            baseline=counters.get(baseline) if baseline else None,
        )
        state = observe(state, look, settings)
        verdict = decide(state, settings, now)
        judgement = verdict.model_dump(mode="json")
        if last.get("verdict") != verdict.verdict:
            await self._log(
                step_id,
                [
                    f"analysis: {verdict.verdict} after {verdict.requests} requests"
                    + (f": {'; '.join(verdict.reasons)}" if verdict.reasons else "")
                ]
                + [f"  {e.check}: {e.summary}" for e in verdict.evidence],
            )
        series = series_point(detail, look, verdict.verdict)
        limit = no_traffic_after(pause)
        if not monitor and "traffic_wait" not in detail:  # what a follower shows while it waits
            until = watch.watch_from + control.held + limit  # as the clock stands now
            series["traffic_wait"] = {"needed": settings.min_requests, "until": until, "urls": urls}
        await self._update_detail(
            step_id, judge=state.model_dump(mode="json"), judgement=judgement, **series
        )
        action = next_action(
            replace(watch, verdict=verdict.verdict, conclusive=verdict.conclusive), now
        )
        if action == Next.FAIL:
            what = "monitor" if monitor else "analysis"
            await self._fail_now(
                deployment_id, step_id, f"{what} failed: " + "; ".join(verdict.reasons)
            )
        elif action == Next.NO_TRAFFIC:
            # counters arrive with agents' reports (every 2 s, later on a busy host): never
            # give up on traffic before several reports had their chance
            await self._fail_now(
                deployment_id,
                step_id,
                f"not enough traffic to judge the release: {verdict.requests} of the "
                f"{settings.min_requests} requests needed in {limit:g} s",
            )
        return action == Next.END

    async def _promoted(self, step_id: int, control: StepControl, last: dict[str, Any]) -> None:
        """A person promoted the step: the judge's record and the log say who, and it ends."""
        by = control.promoted_by
        word = f" (the judge's last word: {last['verdict']})" if last.get("verdict") else ""
        await self._log(step_id, [f"promoted by {by}: the step ends as passed{word}"])
        if last:
            await self._update_detail(step_id, judgement=last | {"promoted_by": by})
        await in_thread(self._step_reason, step_id, f"promoted by {by}")

    def _step_reason(self, step_id: int, reason: str) -> None:
        with self.sessions() as session:
            session.get_one(DeploymentStep, step_id).reason = reason
            session.commit()

    async def _watch_rollback(
        self,
        deployment_id: int,
        step_id: int,
        states: dict[str, tuple[Progress, str | None]],
        elapsed: float,
    ) -> None:
        pending = [n for n, (p, _) in states.items() if p in (Progress.WAITING,)]
        if pending and elapsed < ROLLBACK_WAIT:
            return
        offline = [n for n, (p, _) in states.items() if p == Progress.OFFLINE]
        failed = [f"{n}: {m}" for n, (p, m) in states.items() if p == Progress.FAILED]
        notes = []
        if offline:
            notes.append(
                f"{', '.join(offline)} not connected: the previous release is written as their "
                "desired state and they return to it when they reconnect"
            )
        if pending:
            notes.append(f"{', '.join(pending)} had not confirmed after {ROLLBACK_WAIT:g} s")
        if failed:
            notes.append("; ".join(failed))
        await in_thread(self._rolled_back, deployment_id, step_id, pending, failed, notes)

    def _rolled_back(
        self,
        deployment_id: int,
        step_id: int,
        pending: list[str],
        failed: list[str],
        notes: list[str],
    ) -> None:
        with self.sessions() as session:
            d = session.get_one(Deployment, deployment_id)
            step = session.get_one(DeploymentStep, step_id)
            detail = json.loads(step.detail)
            step.state = "succeeded" if not (pending or failed) else "failed"
            step.reason = "; ".join(notes) or None
            step.finished_at = utcnow()
            final = detail.get("final", "failed")
            if notes:
                d.reason = f"{d.reason}; {'; '.join(notes)}"
            self._end(d, final, d.reason)
            session.commit()
            self._committed("deployment rolled back", deployment=d.id, state=final)

    async def _verify(self, deployment_id: int, step_id: int, env: Environment) -> None:
        def read() -> tuple[list[str], dict[str, HostView], Release, list[str], dict[str, str]]:
            with self.sessions() as session:
                d = session.get_one(Deployment, deployment_id)
                step = session.get_one(DeploymentStep, step_id)
                if step.state == "pending":
                    step.state, step.started_at = "running", utcnow()
                    session.commit()
                hosts = json.loads(d.touched)
                release = d.release
                meta = {
                    "CONVEYOR_APP": d.app.name,
                    "CONVEYOR_ENVIRONMENT": d.environment,
                    "CONVEYOR_RELEASE": release.id,
                    "CONVEYOR_SHA": release.sha,
                    "CONVEYOR_DEPLOYMENT": str(d.id),
                }
                secrets = [s.value for s in d.app.secrets]
                return hosts, _views(session, hosts), release, secrets, meta

        hosts, views, release, secrets, meta = await in_thread(read)
        config = Config.model_validate_json(release.config or "{}")
        assert config.service is not None
        urls = {n: u for n in hosts if (u := views[n].url(config.service.port))}
        lines: list[str] = []
        failed: list[str] = []
        results = await checks.http_checks(env.verify, urls)
        lines += [r.line for r in results]
        failed += [r.line for r in results if not r.ok]
        scripts = [c for c in env.verify if c.run is not None]
        if scripts and not failed:
            cwd = await self._release_files(release, deployment_id)
            first = next(iter(urls.values()), "")
            env_vars = meta | {"CONVEYOR_URL": first, "CONVEYOR_URLS": " ".join(urls.values())}
            for check in scripts:
                assert check.run is not None
                result = await checks.run_script(check.run, cwd, env_vars, check.timeout, secrets)
                lines.append(result.line)
                if not result.ok:
                    failed.append(result.line.split("\n", 1)[0])
                    break
        await self._log(step_id, lines)
        if failed:
            await self._fail_now(deployment_id, step_id, "verify failed: " + "; ".join(failed))
            return
        await self._end_step(deployment_id, step_id)

    # -- record keeping -----------------------------------------------------

    def _confirmed_failure(self, step_id: int, host: str) -> bool:
        key = (step_id, host)
        first = self._failures_seen.setdefault(key, time.monotonic())
        return time.monotonic() - first >= FAILURE_CONFIRM

    @offloaded
    def _update_detail(self, step_id: int, **values: Any) -> None:
        with self.sessions() as session:
            set_detail(session, step_id, values)
            session.commit()

    @offloaded
    def _log(self, step_id: int, lines: list[str]) -> None:
        if not lines:
            return
        with self.sessions() as session:
            append_log(session, step_id, lines)
            session.commit()

    @offloaded
    def _end_step(self, deployment_id: int, step_id: int) -> None:
        with self.sessions() as session:
            step = session.get_one(DeploymentStep, step_id)
            step.state, step.finished_at = "succeeded", utcnow()
            session.commit()
            self._committed("step succeeded", deployment=deployment_id, step=step.name)

    @offloaded
    def _fail_now(self, deployment_id: int, step_id: int, reason: str) -> None:
        with self.sessions() as session:
            d = session.get_one(Deployment, deployment_id)
            if d.state != "running":
                return
            self._fail(session, d, session.get_one(DeploymentStep, step_id), reason)
            session.commit()
            self._committed("deployment failed", deployment=d.id, reason=reason)

    def _fail(
        self,
        session: Session,
        d: Deployment,
        step: DeploymentStep | None,
        reason: str,
        *,
        final: str = "failed",
    ) -> None:
        """Stop here and send every touched host back to what it ran before."""
        now = utcnow()
        if step is not None and step.state in ("pending", "running"):
            step.state = "failed" if final == "failed" else "cancelled"
            step.reason = reason
            step.finished_at = now
        for later in d.steps:
            if later.state == "pending":
                later.state = "skipped"
        touched = json.loads(d.touched)
        back = rollback_targets(_load_targets(d.previous or "{}"), touched)
        if not back:
            self._end(d, final, reason if final == "failed" else d.reason or reason)
            return
        d.steps.append(
            DeploymentStep(
                position=len(d.steps),
                kind="rollback",
                name=f"roll back {len(back)} host(s) to {d.previous_release or 'nothing'}",
                targets=_dump_targets(back),
                detail=json.dumps({"final": final, "options": {}}),
            )
        )
        d.state = "rolling_back"
        d.reason = reason

    def _succeed(self, session: Session, d: Deployment) -> bool:
        if d.state == "rolling_back":
            # every step ended but the rollback step: nothing left, record as is
            self._end(d, "failed", d.reason)
            session.commit()
            return True
        self._end(d, "succeeded", None)
        nxt = continue_chain(session, d, self.mirror(d.app.name))
        if nxt is not None and nxt.state == "failed" and self.announcer is not None:
            self.announcer.deployment_ended(nxt)  # refused at once (e.g. not on the branch)
        session.commit()
        self._committed(
            "deployment succeeded",
            deployment=d.id,
            environment=d.environment,
            next=nxt.id if nxt else None,
        )
        self._wake.set()
        return True

    def _end(self, d: Deployment, state: str, reason: str | None) -> None:
        d.state, d.reason, d.finished_at = state, reason, utcnow()
        log.info(
            "deployment ended",
            extra={"deployment": d.id, "state": state, "reason": reason},
        )
        if self.announcer is not None:
            self.announcer.deployment_ended(d)


@dataclass(frozen=True)
class _Watched:
    """What a look at a step that wrote desired state reads from the records."""

    detail: dict[str, Any]
    targets: Targets
    views: dict[str, HostView]
    app_name: str
    release: str
    config: Config
    rollback: bool
    step_name: str
    elapsed: float


def _context(
    d: Deployment, hosts: list[str], previous: Targets, config: Config, env: Environment
) -> Context:
    return Context(
        release=d.release_id,
        hosts=hosts,
        previous=previous,
        batch_size=env.batch.size(len(hosts)),
        steps=tuple(env.steps),
        step_pause=env.step_pause,
        analyse=env.analysis is not None,
        migration=f"deployment-{d.id}" if config.hooks.migrate and d.kind == "deploy" else None,
        monitor=env.monitor,
    )


def _dump_targets(targets: Targets) -> str:
    return json.dumps({h: [r.model_dump() for r in items] for h, items in targets.items()})


def _load_targets(text: str) -> Targets:
    return {
        h: [ReleaseWeight.model_validate(r) for r in items] for h, items in json.loads(text).items()
    }


def _views(session: Session, names: list[str]) -> dict[str, HostView]:
    now = utcnow()
    rows = {h.name: h for h in session.scalars(select(Host).where(Host.name.in_(names)))}
    views = {}
    for name in names:
        host = rows.get(name)
        if host is None:
            views[name] = HostView(name, False, None, None)
            continue
        online = (
            host.state == "enrolled"
            and host.last_seen is not None
            and (now - host.last_seen).total_seconds() <= OFFLINE_AFTER
        )
        observed = ObservedState.model_validate_json(host.observed) if host.observed else None
        views[name] = HostView(name, online, host.applied_generation, observed)
    return views


def _host_errors(views: dict[str, HostView], names: list[str], app: str) -> str:
    errors = []
    for name in names:
        found = views[name].app(app)
        if found is None:
            continue
        if found.error:
            errors.append(f"{name}: {found.error}")
        errors += [f"{name}: {r.release} {r.error}" for r in found.releases if r.error]
    return "; ".join(errors)
