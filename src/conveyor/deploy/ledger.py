"""The engine's records: what it holds, and each state change committed before it acts.

`Ledger` is the base of the deployment engine (deploy/orchestrator.py): the
sessions and notifiers it writes through, and the record keeping every step kind
shares (a step's log and detail, ending a step, failing a deployment into a
rollback, ending a deployment).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from conveyor.analysis.prometheus import PrometheusSource
from conveyor.analysis.sources import MetricSource, RouterSource
from conveyor.config import Analysis, Prometheus
from conveyor.deploy import checks
from conveyor.deploy.certificates import Certificates
from conveyor.deploy.desired import Notifier
from conveyor.deploy.detail import StepDetail, read_detail, write_detail
from conveyor.deploy.plan import Targets, rollback_targets
from conveyor.deploy.progress import HostView
from conveyor.deploy.records import continue_chain
from conveyor.deploy.stepping import FAILURE_CONFIRM, OFFLINE_AFTER, OFFLINE_GRACE
from conveyor.notify import Announcer
from conveyor.protocol import ObservedState, ReleaseWeight, RouterMetrics
from conveyor.releases.store import ArtifactStore
from conveyor.store.cluster import Cluster
from conveyor.store.models import Deployment, DeploymentStep, Host, Release, utcnow
from conveyor.store.steps import append_log
from conveyor.threads import Wakeup, offloaded

log = logging.getLogger("conveyor.deploy")

CRASH_ENV = "CONVEYOR_CRASH_AFTER_STEPS"  # tests: SIGKILL the server after N persisted changes


class Ledger:
    """What the engine holds, and the record keeping its step kinds share."""

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
        # `tls: acme` ordered once per app and environment, and renewed
        self.certificates = Certificates(sessions, data_dir, notifier)
        self.store = store
        self.mirror = mirror
        self._wake = Wakeup()  # set from request threads and the engines' threads
        self._tasks: dict[int, asyncio.Task[None]] = {}
        # several servers on one PostgreSQL database (store/cluster.py): leases, wake-ups
        self.cluster: Cluster | None = None
        self._lost: set[int] = set()  # deployments whose lease another server took
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
            views = host_views(session, hosts)
        return {n: v.observed.metrics if v.observed else None for n, v in views.items()}

    def wake(self) -> None:
        self._wake.set()

    def _committed(self, what: str, **extra: Any) -> None:
        """After each persisted change; a test may ask the server to die right here."""
        self._persisted += 1
        log.info(what, extra=extra | {"persisted": self._persisted})
        if self._crash_after is not None and self._persisted >= self._crash_after:
            log.warning("crashing on purpose", extra={"after": self._persisted})
            os.kill(os.getpid(), signal.SIGKILL)

    # -- what this process saw of the hosts ---------------------------------

    def _gone(self, deployment_id: int, host: str) -> bool:
        """Whether a host seen unreachable has stayed so for longer than the grace."""
        first = self._offline_seen.setdefault((deployment_id, host), time.monotonic())
        return time.monotonic() - first >= OFFLINE_GRACE

    def _back(self, deployment_id: int, host: str) -> None:
        self._offline_seen.pop((deployment_id, host), None)

    def _confirmed_failure(self, step_id: int, host: str) -> bool:
        key = (step_id, host)
        first = self._failures_seen.setdefault(key, time.monotonic())
        return time.monotonic() - first >= FAILURE_CONFIRM

    async def _release_files(self, release: Release, deployment_id: int) -> Path:
        into = self.data / "work" / f"deploy-{deployment_id}"
        archive = self.store.path_for(release.sha256)
        return await asyncio.to_thread(checks.unpack_release, archive, into)

    # -- record keeping -----------------------------------------------------

    @offloaded
    def _update_detail(self, step_id: int, **values: Any) -> None:
        with self.sessions() as session:
            write_detail(session, step_id, **values)
            session.commit()

    @offloaded
    def _log(self, step_id: int, lines: list[str]) -> None:
        if not lines:
            return
        with self.sessions() as session:
            append_log(session, step_id, lines)
            session.commit()

    @offloaded
    def _step_reason(self, step_id: int, reason: str) -> None:
        with self.sessions() as session:
            session.get_one(DeploymentStep, step_id).reason = reason
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
        back = rollback_targets(load_targets(d.previous or "{}"), touched)
        if not back:
            self._end(d, final, reason if final == "failed" else d.reason or reason)
            return
        d.steps.append(
            DeploymentStep(
                position=len(d.steps),
                kind="rollback",
                name=f"roll back {len(back)} host(s) to {d.previous_release or 'nothing'}",
                targets=dump_targets(back),
                detail=StepDetail(final=final).model_dump_json(include={"final", "options"}),
            )
        )
        d.state = "rolling_back"
        d.reason = reason

    def _rolled_back(
        self,
        deployment_id: int,
        step_id: int,
        pending: tuple[str, ...],
        failed: tuple[str, ...],
        notes: tuple[str, ...],
    ) -> None:
        with self.sessions() as session:
            d = session.get_one(Deployment, deployment_id)
            step = session.get_one(DeploymentStep, step_id)
            detail = read_detail(step)
            step.state = "succeeded" if not (pending or failed) else "failed"
            step.reason = "; ".join(notes) or None
            step.finished_at = utcnow()
            final = detail.final or "failed"
            if notes:
                d.reason = f"{d.reason}; {'; '.join(notes)}"
            self._end(d, final, d.reason)
            session.commit()
            self._committed("deployment rolled back", deployment=d.id, state=final)

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


def dump_targets(targets: Targets) -> str:
    return json.dumps({h: [r.model_dump() for r in items] for h, items in targets.items()})


def load_targets(text: str) -> Targets:
    return {
        h: [ReleaseWeight.model_validate(r) for r in items] for h, items in json.loads(text).items()
    }


def host_views(session: Session, names: list[str]) -> dict[str, HostView]:
    """Each host as the server knows it now: its last report and whether it is connected."""
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
