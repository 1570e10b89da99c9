"""Executing a step that wrote desired state: read, ask deploy/stepping.py, write.

A step that changed hosts (a batch, a traffic weight, a switch, the watch window,
a rollback) waits for them to converge, runs its checks, then watches its pause
under the judge. What to do on each look is decided by the pure functions of
deploy/stepping.py; this module only reads the records and the metric sources
and writes what they decided.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from dataclasses import dataclass, replace

from sqlalchemy.orm import Session

from conveyor.analysis.judge import JudgeState, Look, Settings, decide, observe, start_window
from conveyor.analysis.judge_state import planned_epochs
from conveyor.analysis.sources import SourceError
from conveyor.config import Analysis, Config, Environment
from conveyor.deploy import checks
from conveyor.deploy.control import StepWatch
from conveyor.deploy.detail import StepDetail, TrafficWaitRecord, read_detail
from conveyor.deploy.judging import (
    carried_judge,
    deployment_reference,
    reference_window,
    series_point,
)
from conveyor.deploy.ledger import Ledger, host_views, load_targets
from conveyor.deploy.plan import Targets
from conveyor.deploy.progress import HostView, Progress, host_progress
from conveyor.deploy.stepping import (
    CONVERGE_MARGIN,
    Act,
    HostState,
    Pause,
    PauseLook,
    StepLook,
    judged_move,
    next_move,
    pause_move,
    source_gives_up,
    step_watch,
    traffic_until,
)
from conveyor.protocol import Judgement, ReleaseCounters, StepControl
from conveyor.store.models import Deployment, DeploymentStep, Release, utcnow
from conveyor.threads import in_thread


@dataclass(frozen=True)
class _Watched:
    """What a look at a step that wrote desired state reads from the records."""

    detail: StepDetail
    targets: Targets
    views: dict[str, HostView]
    app_name: str
    release: str
    config: Config
    rollback: bool
    step_name: str
    elapsed: float
    first: bool  # the deployment's first step
    previous_release: str | None
    all_hosts: list[str]  # the environment's hosts in this deployment
    migrating: float = 0.0  # a migrate or contract step: the time its command may take


@dataclass(frozen=True)
class _Paused:
    """What a look at a step's pause reads from the records."""

    detail: StepDetail
    monitor: bool
    baseline: str | None
    carried: JudgeState | None
    reference: ReleaseCounters | None  # the baseline's counters when the deployment began
    planned: int = 0  # the epochs of comparison the deployment's judged steps plan


@dataclass(frozen=True)
class _Judged:
    """A watched step the judge looks at now."""

    deployment_id: int
    step_id: int
    app: str
    release: str
    hosts: list[str]
    urls: list[str]
    paused: _Paused
    watch: StepWatch
    analysis: Analysis


class Watcher(Ledger):
    """The engine's part that executes steps which wrote desired state."""

    async def _watch(self, deployment_id: int, step_id: int, env: Environment) -> None:
        """A step that wrote desired state: wait for the hosts, then checks and pause."""
        w = await in_thread(self._read_watched, deployment_id, step_id)
        service = w.config.service
        assert service is not None
        if w.first and w.detail.reference_at is None and not w.rollback:
            await self._measure_reference(step_id, env, w)
        look = StepLook(
            name=w.step_name,
            rollback=w.rollback,
            hosts=self._host_states(deployment_id, w),
            views=w.views,
            app=w.app_name,
            elapsed=w.elapsed,
            converge_limit=service.health.timeout + CONVERGE_MARGIN + w.migrating,
            checks=w.detail.options.checks,
            checked=w.detail.checked,
            pause=w.detail.options.pause,
        )
        if not w.rollback:
            failing = [n for n, (p, _) in look.hosts.items() if p == Progress.FAILED]
            confirmed = {n for n in failing if self._confirmed_failure(step_id, n)}
            look = replace(look, confirmed=frozenset(confirmed))
        move = next_move(look)
        if move.act == Act.CHECK:
            if not await self._check(deployment_id, step_id, env, w):
                return
            move = next_move(replace(look, checked=True))
        if move.act == Act.ROLLED_BACK:
            await in_thread(
                self._rolled_back, deployment_id, step_id, move.pending, move.failed, move.notes
            )
        elif move.act == Act.FAIL:
            assert move.reason is not None
            await self._fail_now(deployment_id, step_id, move.reason)
        elif move.act == Act.WATCH:
            routers = list(checks.reach(w.views, w.targets, service, env).urls.values())
            args = (list(w.targets), w.app_name, w.release, w.detail.options.pause, routers)
            if await self._watch_pause(deployment_id, step_id, env, *args):
                await self._end_step(deployment_id, step_id)
        elif move.act == Act.END:
            await self._end_step(deployment_id, step_id)

    def _read_watched(self, deployment_id: int, step_id: int) -> _Watched:
        with self.sessions() as session:
            d = session.get_one(Deployment, deployment_id)
            step = session.get_one(DeploymentStep, step_id)
            targets = load_targets(step.targets)
            started = step.started_at or utcnow()
            return _Watched(
                detail=read_detail(step),
                targets=targets,
                views=host_views(session, list(targets)),
                app_name=d.app.name,
                release=d.release_id,
                config=Config.model_validate_json(d.release.config or "{}"),
                rollback=step.kind == "rollback",
                step_name=step.name,
                elapsed=(utcnow() - started).total_seconds(),
                first=step.position == min(s.position for s in d.steps),
                previous_release=d.previous_release,
                all_hosts=list(json.loads(d.previous or "{}")),
                migrating=migration_timeout(session, targets),
            )

    async def _measure_reference(self, step_id: int, env: Environment, w: _Watched) -> None:
        """The previous release's counters as the deployment begins: the judge's reference
        is what it serves from now until the judge's first look (a recent window, never its
        whole life). Read once; a source that cannot answer leaves no reference."""
        baseline = w.previous_release
        found = None
        if env.analysis is not None and baseline and baseline != w.release and w.all_hosts:
            try:
                counters = await self.metric_source(env.analysis).read(
                    w.app_name, [baseline], w.all_hosts
                )
                found = counters.get(baseline)
            except SourceError as exc:
                await self._log(step_id, [f"metrics: {exc} (the judge has no reference window)"])
        await self._update_detail(step_id, reference=found, reference_at=time.time())

    def _host_states(self, deployment_id: int, w: _Watched) -> dict[str, HostState]:
        """Each host's progress; one unreachable for less than the grace counts as waiting."""
        generations = w.detail.generations
        states: dict[str, HostState] = {
            name: host_progress(w.views[name], w.app_name, generations.get(name, 0), items)
            for name, items in w.targets.items()
        }
        for name, (progress, _) in states.items():
            if progress != Progress.OFFLINE:
                self._back(deployment_id, name)
            elif not self._gone(deployment_id, name):
                states[name] = (Progress.WAITING, None)  # within the grace: wait for it
        return states

    async def _check(self, deployment_id: int, step_id: int, env: Environment, w: _Watched) -> bool:
        """The step's HTTP checks on its converged hosts; False when they failed it."""
        assert w.config.service is not None
        where = checks.reach(w.views, w.targets, w.config.service, env)
        results = await checks.http_checks(
            env.verify,
            where.urls,
            preview=w.release if w.detail.options.preview else None,
            host_header=where.host_header,
            https=where.https,
        )
        failed = [r.line for r in results if not r.ok]
        await self._log(step_id, [r.line for r in results])
        if failed:
            await self._fail_now(deployment_id, step_id, "check failed: " + "; ".join(failed))
            return False
        await self._update_detail(step_id, checked=True)
        return True

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

        def read() -> _Paused:
            with self.sessions() as session:
                step = session.get_one(DeploymentStep, step_id)
                d = session.get_one(Deployment, deployment_id)
                baseline = d.previous_release if d.previous_release != release else None
                detail, carried = read_detail(step), carried_judge(d, step)
                # the plan matters to the judge's first look only (judge_state.with_budget):
                # every step's detail is not read again at each look
                first = detail.judge is None and carried is None
                planned = (
                    planned_epochs(
                        o.pause for o in (read_detail(x).options for x in d.steps) if o.analyse
                    )
                    if first
                    else 0
                )
                return _Paused(
                    detail,
                    step.kind == "monitor",
                    baseline,
                    carried,
                    deployment_reference(d),
                    planned,
                )

        p = await in_thread(read)
        detail, analysis = p.detail, env.analysis
        last = detail.judgement
        watch = step_watch(detail, pause, p.monitor, analysis)
        move = pause_move(PauseLook(watch, last.at if last else None, analysis is not None), now)
        if move == Pause.START:
            await self._update_detail(step_id, watch_from=now)
            return False
        if move == Pause.PROMOTED:
            await self._promoted(step_id, detail.control or StepControl(), last)
            return True
        if move != Pause.LOOK:
            return move == Pause.END
        assert watch is not None and analysis is not None
        judged = _Judged(deployment_id, step_id, app, release, hosts, urls, p, watch, analysis)
        return await self._judge(judged, now)

    async def _judge(self, j: _Judged, now: float) -> bool:
        """The judge's look at the step's counters; True once the step may end."""
        settings = replace(Settings.of(j.analysis), planned=j.paused.planned)
        detail, baseline, step_id = j.paused.detail, j.paused.baseline, j.step_id
        # the judge's statistics need scipy, seconds to import: in a thread, not on the
        # event loop, and only in servers that judge something (a no-op once loaded)
        await asyncio.to_thread(importlib.import_module, "scipy.special")
        releases = [j.release] + ([baseline] if baseline else [])
        try:
            counters = await self.metric_source(j.analysis).read(j.app, releases, j.hosts)
        except SourceError as exc:
            if detail.source_error != str(exc):
                await self._log(step_id, [f"metrics: {exc}"])
                await self._update_detail(step_id, source_error=str(exc))
            if source_gives_up(j.watch, now):
                await self._fail_now(j.deployment_id, step_id, f"metrics unavailable: {exc}")
            return False
        carried = j.paused.carried
        first = detail.judge is None and carried is None
        now_baseline = counters.get(baseline) if baseline else None
        look = Look(
            at=now,
            canary=counters.get(j.release) or ReleaseCounters(),
            baseline=now_baseline,
            reference=reference_window(j.paused.reference, now_baseline) if first else None,
        )
        state = detail.judge or (start_window(carried) if carried else JudgeState())
        state = observe(state, look, settings)
        verdict = decide(state, settings, now)
        if detail.judgement is None or detail.judgement.verdict != verdict.verdict:
            await self._log(step_id, _said(verdict))
        series = series_point(detail, look, verdict.verdict)
        if not j.paused.monitor and detail.traffic_wait is None:
            # what a follower shows while it waits
            until = traffic_until(j.watch)
            series["traffic_wait"] = TrafficWaitRecord(
                needed=settings.min_requests, until=until, urls=j.urls
            )
        await self._update_detail(step_id, judge=state, judgement=verdict, **series)
        move = judged_move(
            j.watch,
            verdict.verdict,
            verdict.conclusive,
            verdict.reasons,
            verdict.requests,
            settings.min_requests,
            now,
        )
        if move.act == Act.FAIL:
            assert move.reason is not None
            await self._fail_now(j.deployment_id, step_id, move.reason)
        return move.act == Act.END

    async def _promoted(self, step_id: int, control: StepControl, last: Judgement | None) -> None:
        """A person promoted the step: the judge's record and the log say who, and it ends."""
        by = control.promoted_by
        word = f" (the judge's last word: {last.verdict})" if last else ""
        await self._log(step_id, [f"promoted by {by}: the step ends as passed{word}"])
        if last:
            await self._update_detail(
                step_id, judgement=last.model_copy(update={"promoted_by": by})
            )
        await self._step_reason(step_id, f"promoted by {by}")


def _said(verdict: Judgement) -> list[str]:
    """The judge's new word, for the step's log."""
    return [
        f"analysis: {verdict.verdict} after {verdict.requests} requests"
        + (f": {'; '.join(verdict.reasons)}" if verdict.reasons else "")
    ] + [f"  {e.check}: {e.summary}" for e in verdict.evidence]


def migration_timeout(session: Session, targets: Targets) -> float:
    """The longest migrations.timeout of the releases a step asks to migrate (0: none):
    the hosts converge once the migration is done, so it may take that much longer."""
    limits = [0.0]
    for items in targets.values():
        for item in items:
            release = session.get(Release, item.release) if item.migrate else None
            if release is not None and release.config:
                limits.append(Config.model_validate_json(release.config).migrations.timeout)
    return max(limits)
