"""Starting deployments: gate the pending ones, resolve their hosts, plan their steps.

All of it is written before anything acts: what each host runs now (to roll back
to), and the planned steps with their options.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.certs import CertError
from conveyor.config import Config, Environment
from conveyor.config.environment import HostsCommand
from conveyor.deploy import bluegreen, canary, checks, contracting, rolling, secretcommands
from conveyor.deploy.claims import domain_clash, release_claims
from conveyor.deploy.desired import DesiredStateError, service_spec
from conveyor.deploy.detail import StepDetail, StepOptions
from conveyor.deploy.gates import GateError, environment, expand_passed, waiting_for
from conveyor.deploy.ledger import dump_targets
from conveyor.deploy.plan import Context, PlannedStep, Targets
from conveyor.deploy.provisioning import Provisioner
from conveyor.deploy.records import ACTING, PENDING
from conveyor.deploy.secretcommands import SecretCommandError
from conveyor.deploy.stepping import OFFLINE_AFTER, OFFLINE_GRACE
from conveyor.protocol import ReleaseWeight
from conveyor.store.locking import lock_for_writing
from conveyor.store.models import Deployment, DeploymentStep, Host, Release, utcnow
from conveyor.store.secrets import secret_commands, store_resolved
from conveyor.threads import in_thread

log = logging.getLogger("conveyor.deploy")

STRATEGIES: dict[str, Callable[[Context], list[PlannedStep]]] = {
    "rolling": rolling.plan,
    "blue-green": bluegreen.plan,
    "canary": canary.plan,
}


class Starter(Provisioner):
    """The engine's part that moves a deployment from pending to running."""

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
                if self._may_start(d, busy):
                    starting.append(d.id)
            session.commit()
        return starting, ids

    def _may_start(self, d: Deployment, busy: set[tuple[int, str]]) -> bool:
        """Whether a pending deployment passes its gates now (else it says why it waits)."""
        key = (d.app_id, d.environment)
        if key in busy:
            if d.state != "queued" or d.reason is None:
                d.state, d.reason = "queued", "waiting for the deployment in progress"
            return False
        busy.add(key)
        try:
            _, env = environment(d.release, d.environment)
        except GateError as exc:
            self._end(d, "failed", str(exc))
            return False
        why = waiting_for(d, env, datetime.now(UTC))
        if why is not None:
            if d.state != "waiting" or d.reason != why:
                d.state, d.reason = "waiting", why
                if self.announcer is not None:
                    self.announcer.deployment_waiting(d)
            return False
        return True

    async def _start(self, deployment_id: int) -> None:
        """Resolve the hosts, record what they run now, plan the steps: all before acting."""

        def read() -> tuple[Release, int, str, Config, Environment, dict[str, str]]:
            with self.sessions() as session:
                d = session.get_one(Deployment, deployment_id)
                release = d.release
                config, env = environment(release, d.environment)
                service = config.service
                wanted = service.secret_names if service else []
                defaults = service.secret_commands if service else {}
                commands = secret_commands(session, release.app, d.environment, wanted, defaults)
                return release, d.app_id, d.environment, config, env, commands

        release, app_id, env_name, config, env, commands = await in_thread(read)
        problem: str | None = None
        resolved: dict[str, str] = {}
        try:
            names = await self._inventory(env, release, deployment_id)
            resolved = await secretcommands.resolve(commands, release.app.name, env_name)
            acme = _acme(config, env_name)
            if acme is not None:  # one order for the environment, answered by its hosts
                await in_thread(self._ordering, deployment_id, acme)
                await self.certificates.ensure(app_id, env_name, *acme, hosts=names)
        except GateError as exc:
            names, problem = [], str(exc)
        except SecretCommandError as exc:
            names, problem = [], f"{exc}; nothing changed"
        except CertError as exc:
            names, problem = [], f"TLS: {exc}; nothing changed"
        await in_thread(self._plan, deployment_id, app_id, names, problem, config, env, resolved)

    def _ordering(self, deployment_id: int, acme: tuple[list[str], str, str | None]) -> None:
        """Say why a deployment waits while its certificate is ordered."""
        domains, directory, _ = acme
        with self.sessions() as session:
            d = session.get_one(Deployment, deployment_id)
            app_id, env_name = d.app_id, d.environment
        if not self.certificates.needs_order(app_id, env_name, domains, directory):
            return
        with self.sessions() as session:
            d = session.get_one(Deployment, deployment_id)
            if d.state in PENDING:
                d.reason = f"ordering the TLS certificate of {', '.join(domains)} from {directory}"
                session.commit()

    def _orders_certificate(self, deployment_id: int) -> bool:
        """Whether starting it orders a certificate (seconds: started aside)."""
        with self.sessions() as session:
            d = session.get_one(Deployment, deployment_id)
            try:
                config, _ = environment(d.release, d.environment)
            except GateError:
                return False
            app_id, env_name = d.app_id, d.environment
        acme = _acme(config, env_name)
        return acme is not None and self.certificates.needs_order(
            app_id, env_name, acme[0], acme[1]
        )

    def _plan(
        self,
        deployment_id: int,
        app_id: int,
        names: list[str],
        problem: str | None,
        config: Config,
        env: Environment,
        resolved: dict[str, str],
    ) -> None:
        with self.sessions() as session:
            # read and move it under the write lock: a deploy or rollback that supersedes,
            # cancels or aborts it meanwhile is seen, not overwritten
            lock_for_writing(session, app_id)
            d = session.get_one(Deployment, deployment_id)
            if d.state not in PENDING:
                return
            if resolved:
                store_resolved(session, d.app, d.environment, resolved)
            if problem is None:
                try:  # every secret the release needs has a value here, before anything acts
                    service_spec(session, d.release, d.environment)
                except DesiredStateError as exc:
                    problem = f"{exc}; nothing changed"
            if problem is None:
                # checked when queued too; here for hosts from a command, rollbacks, and
                # another app that took a name meanwhile
                mine = release_claims(d.release, d.environment)
                problem = domain_clash(session, d.app, mine, names)
            if problem is None:
                # checked when queued too; here for what changed meanwhile
                problem = _expand_refused(session, d, config)
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
            planned = _write_plan(session, d, names, config, env)
            if not planned and d.kind == "contract":
                why = f"release {d.release_id} is not desired on {names[0]}: no contract ran"
                self._end(d, "failed", why)
                session.commit()
                return
            d.state, d.reason, d.started_at = "running", None, utcnow()
            if self.announcer is not None:  # `announce: before`, committed with the start
                self.announcer.deployment_starting(d)
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
        if env.provision is not None:
            return await self._provision(env, release, deployment_id)
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


def _write_plan(
    session: Session, d: Deployment, names: list[str], config: Config, env: Environment
) -> list[PlannedStep]:
    """Record what each host runs now and the deployment's steps (not committed)."""
    hosts = {h.name: h for h in session.scalars(select(Host).where(Host.name.in_(names)))}
    previous: Targets = {}
    for name in names:
        row = next((r for r in hosts[name].apps if r.app_id == d.app_id), None)
        previous[name] = (
            [ReleaseWeight.model_validate(r) for r in json.loads(row.releases)] if row else []
        )
    contract = None
    due = contracting.pending(session, d.app, d.environment) if d.kind != "rollback" else None
    if due is not None and due.waiting is None:
        contract = (due.contract.release, contracting.contract_id(d.id))
    ctx = replace(_context(d, names, previous, config, env), contract=contract)
    if d.kind == "rollback":
        planned = [ctx.switch_step()]
    elif d.kind == "contract":
        planned = ctx.contract_step()  # none: it was applied or waits again meanwhile
    else:
        # the infrastructure checks first: a failure there stops it before any change
        checks = [PlannedStep("checks", f"infrastructure checks on {len(names)} host(s)")]
        planned = (
            (checks if env.checks else [])
            + ctx.contract_step()
            + STRATEGIES[env.strategy](ctx)
            + ctx.monitor_steps()
        )
    d.previous = json.dumps({h: [r.model_dump() for r in items] for h, items in previous.items()})
    d.previous_release = next((ctx.serving(h) for h in names if ctx.serving(h)), None)
    # the migration's content hash, recorded with the outcome of the step that runs it
    hashes = {"migrate": d.release.migration_hash}
    if contract is not None and (brought := session.get(Release, contract[0])) is not None:
        hashes["contract"] = brought.migration_hash
    for i, step in enumerate(planned):
        detail = StepDetail(options=StepOptions.model_validate(step.options()))
        d.steps.append(
            DeploymentStep(
                position=i,
                kind=step.kind,
                name=step.name,
                targets=dump_targets(step.targets),
                weight=step.weight,
                detail=detail.model_dump_json(include={"options"}),
                migration_hash=hashes.get(step.kind),
            )
        )
    return planned


def _expand_refused(session: Session, d: Deployment, config: Config) -> str | None:
    """Why the deployment's expand may not run here (not succeeded before), or None."""
    if expand_id(d, config) is None:
        return None
    try:
        expand_passed(session, d.release, config, d.environment)
    except GateError as exc:
        return f"refused: {exc}; nothing changed"
    return None


def expand_id(d: Deployment, config: Config) -> str | None:
    """The id the deployment's expand migration runs under (its name says which key)."""
    if not config.expand_command or d.kind != "deploy":
        return None
    return f"expand-{d.id}" if config.migrations.expand else f"deployment-{d.id}"


def _context(
    d: Deployment, hosts: list[str], previous: Targets, config: Config, env: Environment
) -> Context:
    compares = env.analysis is not None and env.analysis.compare == "baseline"
    return Context(
        release=d.release_id,
        hosts=hosts,
        previous=previous,
        batch_size=env.batch.size(len(hosts)),
        steps=tuple(env.steps),
        step_pause=env.step_pause,
        analyse=env.analysis is not None,
        migration=expand_id(d, config),
        verify_previous=bool(env.verify),
        monitor=env.monitor.duration,
        # the holdback is what the comparison compares with: none without one
        holdback=env.monitor.holdback_weight if compares else 0,
        holdback_max=env.monitor.holdback_max_weight if compares else 0,
    )


def _acme(config: Config, environment: str) -> tuple[list[str], str, str | None] | None:
    """The domains, directory and email of the environment's `tls: acme` (None: no ACME)."""
    routing = config.routing(environment)
    if routing.tls is None or routing.tls.acme is None or not routing.domains:
        return None
    return list(routing.domains), routing.tls.acme.directory, routing.tls.acme.email
