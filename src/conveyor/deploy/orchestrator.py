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
from conveyor.deploy.desired import set_host_app
from conveyor.deploy.detail import write_detail
from conveyor.deploy.gates import environment
from conveyor.deploy.ledger import CRASH_ENV, load_targets
from conveyor.deploy.records import ACTING, create_contracts
from conveyor.deploy.starting import Starter
from conveyor.deploy.verifying import Verifier
from conveyor.deploy.watching import Watcher
from conveyor.store.models import App, Deployment, DeploymentStep, Host, utcnow
from conveyor.threads import in_thread

log = logging.getLogger("conveyor.deploy")

TICK = 0.25
CONTRACTS_EVERY = 2.0  # seconds between two looks for contracts that may run by themselves

__all__ = ["CRASH_ENV", "TICK", "DeployEngine"]


class DeployEngine(Starter, Watcher, Verifier):
    """Schedules deployments (one per environment) and drives each as an asyncio task."""

    _contracts_at = float("-inf")

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

    async def _schedule(self) -> None:
        now = time.monotonic()
        if now - self._contracts_at >= CONTRACTS_EVERY:
            self._contracts_at = now
            await in_thread(self._contracts)
        # before any deployment starts: a killed server's environments go first
        await self._sweep_provisioned()
        starting, ids = await in_thread(self._pending)
        for deployment_id in starting:
            if await in_thread(self._provisions, deployment_id):
                # minutes, maybe: the others are scheduled meanwhile (deploy/provisioning.py)
                self._start_aside(deployment_id)
                continue
            await self._start(deployment_id)
            ids.append(deployment_id)
        for deployment_id in ids:
            if deployment_id not in self._tasks and not self._stopping:
                task = asyncio.create_task(
                    self._drive(deployment_id), name=f"deploy-{deployment_id}"
                )
                self._tasks[deployment_id] = task
                task.add_done_callback(functools.partial(self._finished, deployment_id))

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
        if kind in ("verify", "compat"):
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
        for name in targets:
            self.notifier.changed(name)
        self._committed("step started", deployment=d.id, step=step.name)
        return False
