"""The deployment engine: starts queued deployments under their gates and drives their steps.

Each state change is committed before the action it announces: a step's desired
state is written (and its generation per host recorded) before any agent is
woken, so a server killed at any moment restarts with a record that says what
each host was asked to run, and continues from there or rolls back.

The engine is drawn by concept: deploy/ledger.py holds its records, starting.py
plans a deployment, watching.py and verifying.py execute the step kinds, and
deploy/stepping.py decides each step's next move (pure functions).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import shutil
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.config import Environment
from conveyor.deploy.announcing import Announcing
from conveyor.deploy.desired import set_host_app
from conveyor.deploy.detail import write_detail
from conveyor.deploy.gates import environment
from conveyor.deploy.infrachecking import InfraChecking
from conveyor.deploy.ledger import CRASH_ENV, load_targets
from conveyor.deploy.records import ACTING, PENDING, create_contracts
from conveyor.deploy.sizing import size_window
from conveyor.deploy.starting import Starter
from conveyor.deploy.verifying import Verifier
from conveyor.deploy.watching import Watcher
from conveyor.store import leases
from conveyor.store.cluster import alive
from conveyor.store.leases import Held, fenced
from conveyor.store.models import App, Deployment, DeploymentStep, Host, utcnow
from conveyor.store.outage import OUTAGE
from conveyor.store.steps import append_log
from conveyor.threads import in_thread

log = logging.getLogger("conveyor.deploy")

TICK = 0.25
CONTRACTS_EVERY = 2.0  # seconds between two looks for contracts that may run by themselves

__all__ = ["CRASH_ENV", "TICK", "DeployEngine"]


class DeployEngine(Starter, Watcher, Verifier, Announcing, InfraChecking):
    """Schedules deployments (one per environment) and drives each as an asyncio task."""

    _contracts_at = float("-inf")

    async def serve(self) -> None:
        self._wake.bind()
        while not self._stopping:
            away = None
            try:
                await self._schedule()
                OUTAGE.answered()
            except Exception as exc:
                away = OUTAGE.turn_failed(exc, "deployment scheduler")
                if away is None:
                    log.exception("deployment scheduler error")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=away or 1.0)

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for task in self._tasks.values():
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=10)

    async def _schedule(self) -> None:
        now = time.monotonic()
        if now - self._contracts_at >= CONTRACTS_EVERY:
            self._contracts_at = now
            await in_thread(self._contracts)
        # before any deployment starts: a killed server's environments go first
        await self._sweep_provisioned()
        starting, ids = await in_thread(self._pending)
        held: dict[int, Held | None] = {}
        for deployment_id in starting:
            # another server sharing the database may be starting it: whoever holds its
            # lease starts and drives it
            mine, lease = await self._claim(deployment_id)
            if not mine:
                continue
            with fenced(lease):
                if await in_thread(self._provisions, deployment_id) or await in_thread(
                    self._orders_certificate, deployment_id
                ):
                    # minutes, maybe: the others are scheduled meanwhile (its task keeps
                    # the fence: deploy/provisioning.py)
                    self._start_aside(deployment_id)
                    continue
                await self._start(deployment_id)
            ids.append(deployment_id)
            held[deployment_id] = lease
        for deployment_id in ids:
            if deployment_id in self._tasks or self._stopping:
                continue
            if deployment_id in held:
                lease = held[deployment_id]
            else:
                mine, lease = await self._claim(deployment_id)
                if not mine:
                    continue
            task = asyncio.create_task(
                self._drive(deployment_id, lease), name=f"deploy-{deployment_id}"
            )
            self._tasks[deployment_id] = task
            task.add_done_callback(functools.partial(self._finished, deployment_id))

    async def _claim(self, deployment_id: int) -> tuple[bool, Held | None]:
        """Whether this server drives the deployment, and under which lease (None: the
        only server, on SQLite)."""
        if self.cluster is None:
            return True, None
        me = self.cluster.holder

        def claim_it() -> Held | None:
            with self.sessions() as session:
                return leases.claim(session, "deployment", deployment_id, me, alive)

        lease = await in_thread(claim_it)
        if lease is not None and lease.generation > 1:
            log.warning(
                "deployment taken over",
                extra={"deployment": deployment_id, "generation": lease.generation},
            )
        return lease is not None, lease

    async def _keep(self, lease: Held, driving: asyncio.Task[None]) -> None:
        """Renew the lease while the deployment is driven; stop driving once it is lost
        (taken over, or not renewed for its whole TTL: others may take it now)."""

        def renew() -> bool:
            with self.sessions() as session:
                return leases.renew(session, lease)

        renewed = time.monotonic()
        while not driving.done():
            await asyncio.sleep(leases.RENEW_EVERY)
            try:
                if await in_thread(renew):
                    renewed = time.monotonic()
                    continue
                why = "taken over"
            except leases.LeaseLost as exc:
                why = str(exc)
            except Exception as exc:  # the database is away: keep trying until the TTL
                if time.monotonic() - renewed < leases.TTL:
                    if OUTAGE.turn_failed(exc, f"lease of deployment {lease.key}") is None:
                        log.warning("lease not renewed", extra={"error": str(exc)})
                    continue
                why = f"not renewed for {leases.TTL:.0f} s: {exc}"
            log.warning("lease lost", extra={"deployment": lease.key, "why": why})
            self._lost.add(lease.key)
            driving.cancel()
            return

    def _contracts(self) -> None:
        """Contracts that may run by themselves now (their older releases went cold)."""
        with self.sessions() as session:
            created = create_contracts(session)
            session.commit()
        for d in created:
            self._committed("contract deployment created", deployment=d.id, release=d.release_id)

    def _finished(self, deployment_id: int, _task: object = None) -> None:
        self._tasks.pop(deployment_id, None)
        self._wake.set()

    async def _drive(self, deployment_id: int, lease: Held | None) -> None:
        """Drive one deployment to its end; every commit fenced by its lease, if any."""
        with fenced(lease):
            me = asyncio.current_task()
            keeper = None
            if lease is not None and me is not None:
                keeper = asyncio.create_task(self._keep(lease, me), name=f"lease-{deployment_id}")
            try:
                await self._steps(deployment_id)
            except asyncio.CancelledError:
                if deployment_id in self._lost:
                    return  # another server drives it now: nothing more from this one
                raise
            except leases.LeaseLost as exc:
                log.warning("lease lost", extra={"deployment": deployment_id, "why": str(exc)})
                self._lost.add(deployment_id)
            finally:
                if keeper is not None:
                    keeper.cancel()
                if deployment_id in self._lost:
                    self._lost.discard(deployment_id)
                else:
                    await in_thread(self._clean_up, deployment_id, lease)

    async def _steps(self, deployment_id: int) -> None:
        try:
            while not self._stopping:
                try:
                    done = await self._advance(deployment_id)
                except Exception as exc:
                    # the database away: the look or its action rolled back whole (nothing
                    # half-written); the deployment waits for it, then looks again
                    away = OUTAGE.turn_failed(exc, f"deployment {deployment_id}")
                    if away is None:
                        raise
                    await asyncio.sleep(away)
                    continue
                if done:
                    await self._checks_ended(deployment_id)
                    await self._announce_after(deployment_id)
                    break
                await asyncio.sleep(TICK)
        except (asyncio.CancelledError, leases.LeaseLost):
            raise
        except Exception as exc:  # a bug must not leave hosts half-way: roll back
            log.exception("deployment crashed", extra={"deployment": deployment_id})
            await in_thread(self._crashed, deployment_id, exc)

    def _crashed(self, deployment_id: int, exc: Exception) -> None:
        with self.sessions() as session:
            d = session.get_one(Deployment, deployment_id)
            if d.state == "running":
                step = next((s for s in d.steps if s.state in ("pending", "running")), None)
                self._fail(session, d, step, f"internal error: {exc}")
                session.commit()

    def _clean_up(self, deployment_id: int, lease: Held | None = None) -> None:
        with self.sessions() as session:
            d = session.get(Deployment, deployment_id)
            ended = d is None or d.state not in ACTING
            # a deployment still pending (waiting for its hosts) keeps its lease
            if lease is not None and (d is None or d.state not in ACTING + PENDING):
                leases.release(session, lease)
        if ended:
            shutil.rmtree(self.data / "work" / f"deploy-{deployment_id}", ignore_errors=True)

    async def _advance(self, deployment_id: int) -> bool:
        """One look at a deployment; acts at most once. True when it has ended."""
        look = await in_thread(self._look, deployment_id)
        if isinstance(look, bool):
            return look
        kind, step_id, env = look
        if kind in ("verify", "compat"):
            await self._verify(deployment_id, step_id, env)
            return False
        if kind == "checks":
            await self._infra_checks(deployment_id, step_id, env)
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
        # a watch window's holdback, sized from the traffic now, goes with the same commit
        sized = size_window(d, step)
        if sized is not None:
            append_log(session, step.id, [sized])
        targets = load_targets(step.targets)
        generations: dict[str, int] = {}
        app = session.get_one(App, d.app_id)
        for name, releases in targets.items():
            host = session.scalar(select(Host).where(Host.name == name))
            if host is None:
                self._fail(session, d, step, f"host {name} was removed during the deployment")
                session.commit()
                return False
            set_host_app(session, host, app, releases, sticky=False, environment=d.environment)
            generations[name] = host.generation
        touched = json.loads(d.touched)
        touched += [h for h in targets if h not in touched]
        d.touched = json.dumps(touched)
        # only its own key: a person may have paused or promoted the step meanwhile
        write_detail(session, step.id, generations=generations)
        step.state, step.started_at = "running", utcnow()
        session.commit()
        self.notifier.changed_many(list(targets))  # one wake-up for every host of the step
        self._committed("step started", deployment=d.id, step=step.name)
        return False
