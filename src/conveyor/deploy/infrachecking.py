"""The `checks` step: each host's agent runs the environment's infrastructure checks before
the deployment changes anything; one failure stops it there, naming the host and check.

The request is written into each host's desired state (Host.checks) before any agent is
woken; the agents report their results with their observed state; the step reads them
until every host has answered (or the time is up), then takes the request back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from sqlalchemy import select

from conveyor.config import Environment
from conveyor.config.infra import InfraCheckSetting
from conveyor.deploy.ledger import Ledger
from conveyor.protocol import ChecksRequest, ChecksResult, InfraCheck, ObservedState
from conveyor.store.models import Deployment, DeploymentStep, Host, utcnow
from conveyor.store.steps import append_log
from conveyor.threads import in_thread

log = logging.getLogger("conveyor.deploy")

REPORT_GRACE = 60.0  # seconds, past the checks' own timeouts, for every agent to report


def wire_check(setting: InfraCheckSetting) -> InfraCheck:
    """A conveyor.yml check as the agent runs it."""
    timeout = setting.timeout
    if setting.tcp is not None:
        return InfraCheck(kind="tcp", target=setting.tcp, timeout=timeout)
    if setting.tls is not None:
        tls = setting.tls
        return InfraCheck(
            kind="tls", target=tls.host, port=tls.port, min_days=tls.min_days, timeout=timeout
        )
    if setting.disk is not None:
        disk = setting.disk
        return InfraCheck(kind="disk", target=disk.path, min_free=disk.min_free, timeout=timeout)
    if setting.mount is not None:
        return InfraCheck(kind="mount", target=setting.mount, timeout=timeout)
    assert setting.command is not None
    return InfraCheck(kind="command", target=setting.command, timeout=timeout)


def checks_request(deployment: int, app: str, environment: str, env: Environment) -> ChecksRequest:
    return ChecksRequest(
        id=f"checks-{deployment}",
        app=app,
        environment=environment,
        checks=[wire_check(c) for c in env.checks],
    )


def time_allowed(request: ChecksRequest) -> float:
    return sum(c.timeout for c in request.checks) + REPORT_GRACE


def verdict(
    hosts: Sequence[str], results: dict[str, ChecksResult | None]
) -> tuple[str, str | None, list[str]]:
    """("wait" | "passed" | "failed", the failure's reason, log lines) of the hosts' results."""
    lines: list[str] = []
    failures: list[str] = []
    waiting = [h for h in hosts if (r := results.get(h)) is None or r.state == "running"]
    for host in hosts:
        result = results.get(host)
        for o in result.outcomes if result else []:
            lines.append(f"{host}: {o.check}: {'ok' if o.ok else 'FAILED'}: {o.detail}")
            if not o.ok:
                failures.append(f"{host}: {o.check}: {o.detail}")
    if failures:
        reason = "infrastructure check failed, nothing changed: " + "; ".join(failures)
        return "failed", reason, lines
    if waiting:
        return "wait", None, lines
    return "passed", None, lines


def _requests(host: Host) -> list[dict[str, object]]:
    found = json.loads(host.checks or "[]")
    return found if isinstance(found, list) else []


def _result(host: Host, request_id: str) -> ChecksResult | None:
    if not host.observed:
        return None
    observed = ObservedState.model_validate_json(host.observed)
    return next((r for r in observed.checks if r.id == request_id), None)


class InfraChecking(Ledger):
    """The engine's part that runs the `checks` step."""

    async def _infra_checks(self, deployment_id: int, step_id: int, env: Environment) -> None:
        changed = await in_thread(self._infra_look, deployment_id, step_id, env)
        for name in changed:
            self.notifier.changed(name)

    def _infra_look(self, deployment_id: int, step_id: int, env: Environment) -> list[str]:
        """One look: ask the hosts, or read their answers; the hosts whose state changed."""
        with self.sessions() as session:
            d = session.get_one(Deployment, deployment_id)
            step = session.get_one(DeploymentStep, step_id)
            if d.state != "running" or step.state != "running":
                return []
            names = list(json.loads(d.previous or "{}"))
            request = checks_request(d.id, d.app.name, d.environment, env)
            rows = {h.name: h for h in session.scalars(select(Host).where(Host.name.in_(names)))}
            asked = [n for n in names if n in rows and self._ask(rows[n], request)]
            if asked:
                append_log(
                    session,
                    step.id,
                    [f"asked {', '.join(asked)} to run {len(request.checks)} check(s)"],
                )
                session.commit()
                self._committed("infrastructure checks asked", deployment=d.id, hosts=asked)
                return asked
            results = {n: _result(rows[n], request.id) if n in rows else None for n in names}
            state, reason, lines = verdict(names, results)
            if state == "wait":
                started = step.started_at or utcnow()
                if (utcnow() - started).total_seconds() <= time_allowed(request):
                    return []
                late = [n for n in names if (r := results[n]) is None or r.state == "running"]
                state, reason = (
                    "failed",
                    (
                        f"host(s) {', '.join(late)} did not report their infrastructure checks "
                        f"within {time_allowed(request):g} s (an agent older than the server runs "
                        "none: upgrade it); nothing changed"
                    ),
                )
            for row in rows.values():
                self._take_back(row, request.id)
            append_log(session, step.id, lines)
            if state == "passed":
                step.state, step.finished_at = "succeeded", utcnow()
            else:
                assert reason is not None
                self._fail(session, d, step, reason)
            session.commit()
            self._committed("infrastructure checks " + state, deployment=d.id, reason=reason)
            return list(rows)

    async def _checks_ended(self, deployment_id: int) -> None:
        """The deployment ended (aborted during its checks, say): no host keeps its request."""
        try:
            changed = await in_thread(self._take_back_all, f"checks-{deployment_id}")
        except Exception:  # left in the desired state it is harmless: each id runs once
            log.exception(
                "could not take infrastructure checks back", extra={"deployment": deployment_id}
            )
            return
        for name in changed:
            self.notifier.changed(name)

    def _take_back_all(self, request_id: str) -> list[str]:
        with self.sessions() as session:
            hosts = session.scalars(
                select(Host).where(Host.checks.is_not(None), Host.checks.contains(request_id))
            ).all()
            changed = []
            for host in hosts:
                before = host.generation
                self._take_back(host, request_id)
                if host.generation != before:
                    changed.append(host.name)
            session.commit()
            return changed

    @staticmethod
    def _ask(host: Host, request: ChecksRequest) -> bool:
        current = _requests(host)
        if any(r.get("id") == request.id for r in current):
            return False
        host.checks = json.dumps([*current, request.model_dump()])
        host.generation += 1
        return True

    @staticmethod
    def _take_back(host: Host, request_id: str) -> None:
        current = _requests(host)
        kept = [r for r in current if r.get("id") != request_id]
        if len(kept) != len(current):
            host.checks = json.dumps(kept) if kept else None
            host.generation += 1
