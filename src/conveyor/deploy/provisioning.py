"""Environments created from scratch for each deployment: `provision:` and `teardown:`.

The environment's record is committed before the provision command runs, so whatever a
killed server leaves is torn down when it starts again. The command gets a short-lived
API token (to register its hosts with `conveyor host add`, whose enrolment tokens its
agents use), revoked as soon as it ends, and prints the hosts' names; conveyor waits for
them to enrol, deploys, verifies, and tears the environment down however the deployment
ended. A teardown that fails is logged as an error, said in the deployment's reason, and
tried again (5 s, doubling up to 5 minutes) until it succeeds, across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sqlalchemy import select

from conveyor.config import Environment
from conveyor.deploy import checks
from conveyor.deploy.gates import GateError, environment
from conveyor.deploy.ledger import Ledger
from conveyor.deploy.provision import (
    STANDING,
    Standing,
    host_names,
    notify_of,
    retry_delay,
    teardown_due,
    teardown_failed,
)
from conveyor.deploy.stepping import OFFLINE_AFTER
from conveyor.store.models import Deployment, Host, Provisioned, Release, Token, utcnow
from conveyor.threads import in_thread

log = logging.getLogger("conveyor.deploy")

PROVISION_TIMEOUT = 600.0
TEARDOWN_TIMEOUT = 600.0
# how long the named hosts have to enrol and report (tests shorten it)
ENROL_TIMEOUT = float(os.environ.get("CONVEYOR_ENROL_TIMEOUT", "120"))
OUTPUT_LIMIT = 4000
_TEARDOWN_MARK = " [teardown: "


@dataclass
class _Underway:
    provisioning: set[int] = field(default_factory=set)  # deployment ids
    starting: set[int] = field(default_factory=set)  # ... started aside (_start_aside)
    tearing: set[int] = field(default_factory=set)  # Provisioned ids
    not_before: dict[int, float] = field(default_factory=dict)  # Provisioned id: monotonic
    tasks: set[asyncio.Task[bool]] = field(default_factory=set)


@dataclass(frozen=True)
class _Outcome:
    ok: bool
    stdout: str
    text: str  # what to show: status and output (stderr, or both), masked


class Provisioner(Ledger):
    """The engine's part that provisions and tears down environments."""

    @property
    def _underway(self) -> _Underway:
        found = self.__dict__.get("_provision_underway")
        if found is None:
            found = self.__dict__["_provision_underway"] = _Underway()
        return found

    # -- provision ----------------------------------------------------------

    def _provisions(self, deployment_id: int) -> bool:
        """Whether this pending deployment's environment is provisioned for it."""
        with self.sessions() as session:
            d = session.get_one(Deployment, deployment_id)
            try:
                _, env = environment(d.release, d.environment)
            except GateError:
                return False  # said when it starts
            return env.provision is not None

    def _start_aside(self, deployment_id: int) -> None:
        """Start a deployment in a task of its own (once), the scheduler woken when done."""
        underway = self._underway
        if deployment_id in underway.starting:
            return
        underway.starting.add(deployment_id)

        async def start() -> bool:
            try:
                await self._start(deployment_id)
            finally:
                underway.starting.discard(deployment_id)
                self.wake()
            return True

        task = asyncio.create_task(start(), name=f"provision-{deployment_id}")
        underway.tasks.add(task)
        task.add_done_callback(underway.tasks.discard)

    async def _start(self, deployment_id: int) -> None:
        raise NotImplementedError  # the Starter's

    async def _provision(self, env: Environment, release: Release, deployment_id: int) -> list[str]:
        """The hosts of a fresh environment for this deployment (reused if already up)."""
        assert env.provision is not None
        underway = self._underway
        reused = await in_thread(self._up_for, deployment_id)
        if reused is not None:
            return reused
        underway.provisioning.add(deployment_id)
        try:
            return await self._provision_now(env.provision, release, deployment_id)
        finally:
            underway.provisioning.discard(deployment_id)

    async def _provision_now(self, command: str, release: Release, deployment_id: int) -> list[str]:
        row_id, token = await in_thread(self._record_provisioning, deployment_id)
        try:
            cwd = await self._files(release, row_id)
            env = await in_thread(self._script_env, row_id) | {
                "CONVEYOR_SERVER": self.announcer.public_url if self.announcer else "",
                "CONVEYOR_TOKEN": token,
            }
            outcome = await _run(command, cwd, env, PROVISION_TIMEOUT, [token])
        finally:
            await in_thread(self._revoke_token, row_id)
        names, bad = host_names(outcome.stdout)
        problem = None
        if not outcome.ok:
            problem = f"the provision command failed: {outcome.text}"
        elif not names:
            problem = (
                f"the provision command {command!r} printed no host names (one a line on "
                f"its standard output)" + (f"; it printed {bad[:3]}" if bad else "")
            )
        elif bad:
            problem = f"the provision command printed lines that are not host names: {bad[:3]}"
        if problem is None:
            await in_thread(self._mark_up, row_id, names, outcome.text)
            missing = await self._enrolled(names, ENROL_TIMEOUT)
            if missing:
                problem = (
                    f"host(s) {', '.join(missing)} named by the provision command did not "
                    f"enrol and report within {ENROL_TIMEOUT:g} s"
                )
        if problem is None:
            return names
        await in_thread(self._note, row_id, problem)
        torn = await self._tear_down(row_id)
        raise GateError(
            problem + ("; torn down" if torn else "; its teardown failed and is retried")
        )

    def _up_for(self, deployment_id: int) -> list[str] | None:
        with self.sessions() as session:
            row = session.scalars(
                select(Provisioned).where(
                    Provisioned.deployment_id == deployment_id, Provisioned.state == "up"
                )
            ).first()
            return list(json.loads(row.hosts)) if row is not None else None

    def _record_provisioning(self, deployment_id: int) -> tuple[int, str]:
        """The environment's record and its token, committed before the command runs."""
        token = "cvy_" + secrets.token_urlsafe(32)
        with self.sessions() as session:
            d = session.get_one(Deployment, deployment_id)
            name = f"provision {d.app.name}/{d.environment} #{d.id}"
            digest = hashlib.sha256(token.encode()).hexdigest()
            session.add(Token(name=name[:100], role="admin", token_hash=digest))
            row = Provisioned(app_id=d.app_id, environment=d.environment, deployment_id=d.id)
            row.reason = json.dumps({"token": digest})
            session.add(row)
            session.commit()
            self._committed("provisioning", deployment=d.id, provisioned=row.id)
            return row.id, token

    def _revoke_token(self, row_id: int) -> None:
        with self.sessions() as session:
            row = session.get_one(Provisioned, row_id)
            with contextlib.suppress(ValueError, TypeError, KeyError):
                digest = json.loads(row.reason or "")["token"]
                token = session.scalar(select(Token).where(Token.token_hash == digest))
                if token is not None and token.revoked_at is None:
                    token.revoked_at = utcnow()
                row.reason = None
            session.commit()

    def _mark_up(self, row_id: int, names: list[str], output: str) -> None:
        with self.sessions() as session:
            row = session.get_one(Provisioned, row_id)
            row.state, row.hosts, row.reason = "up", json.dumps(names), output[-OUTPUT_LIMIT:]
            session.commit()
        log.info("provisioned", extra={"provisioned": row_id, "hosts": names})

    def _note(self, row_id: int, text: str) -> None:
        with self.sessions() as session:
            session.get_one(Provisioned, row_id).reason = text[-OUTPUT_LIMIT:]
            session.commit()

    async def _enrolled(self, names: list[str], timeout: float) -> list[str]:
        """The hosts that have not enrolled and reported within `timeout` (none: all did)."""
        end = time.monotonic() + timeout
        while True:
            missing = await in_thread(self._not_reporting, names)
            if not missing or time.monotonic() >= end:
                return missing
            await asyncio.sleep(0.5)

    def _not_reporting(self, names: list[str]) -> list[str]:
        with self.sessions() as session:
            rows = {h.name: h for h in session.scalars(select(Host).where(Host.name.in_(names)))}
        now = utcnow()
        return [
            n
            for n in names
            if (h := rows.get(n)) is None
            or h.state != "enrolled"
            or h.last_seen is None
            or (now - h.last_seen).total_seconds() > OFFLINE_AFTER
        ]

    # -- teardown -----------------------------------------------------------

    async def _sweep_provisioned(self) -> None:
        """Start the teardowns that are due (ended deployments, a killed server's leftovers)."""
        underway = self._underway
        for row_id in await in_thread(self._due):
            underway.tearing.add(row_id)
            task = asyncio.create_task(self._tear_down(row_id, claimed=True))
            underway.tasks.add(task)
            task.add_done_callback(underway.tasks.discard)

    def _due(self) -> list[int]:
        underway = self._underway
        now = time.monotonic()
        with self.sessions() as session:
            rows = session.scalars(select(Provisioned).where(Provisioned.state.in_(STANDING)))
            due = []
            for row in rows:
                d = session.get(Deployment, row.deployment_id)
                standing = Standing(
                    state=row.state,
                    deployment_state=d.state if d is not None else None,
                    provisioning_here=row.deployment_id in underway.provisioning,
                    tearing_here=row.id in underway.tearing,
                    wait_left=underway.not_before.get(row.id, now) - now,
                )
                if teardown_due(standing):
                    due.append(row.id)
            return due

    async def _tear_down(self, row_id: int, claimed: bool = False) -> bool:
        """One teardown attempt; True when the environment is gone."""
        underway = self._underway
        if not claimed:
            if row_id in underway.tearing:
                return False
            underway.tearing.add(row_id)
        try:
            found = await in_thread(self._teardown_input, row_id)
            if found is None:
                return True
            command, release, hosts = found
            cwd = await self._files(release, row_id)
            env = await in_thread(self._script_env, row_id) | {"CONVEYOR_HOSTS": " ".join(hosts)}
            outcome = await _run(command, cwd, env, TEARDOWN_TIMEOUT, [])
            await in_thread(
                self._torn_down if outcome.ok else self._teardown_failed, row_id, outcome.text
            )
            if outcome.ok:
                shutil.rmtree(self.data / "work" / f"provision-{row_id}", ignore_errors=True)
            return outcome.ok
        except Exception as exc:  # a teardown is never given up on: noted, tried again
            log.exception("teardown error", extra={"provisioned": row_id})
            await in_thread(self._teardown_failed, row_id, f"{type(exc).__name__}: {exc}")
            return False
        finally:
            underway.tearing.discard(row_id)

    def _teardown_input(self, row_id: int) -> tuple[str, Release, list[str]] | None:
        with self.sessions() as session:
            row = session.get_one(Provisioned, row_id)
            if row.state not in STANDING:
                return None
            d = session.get_one(Deployment, row.deployment_id)
            _, env = environment(d.release, row.environment)
            assert env.teardown is not None
            return env.teardown, d.release, list(json.loads(row.hosts))

    def _torn_down(self, row_id: int, output: str) -> None:
        with self.sessions() as session:
            row = session.get_one(Provisioned, row_id)
            row.state, row.torn_down_at = "torn_down", utcnow()
            row.attempts += 1
            row.reason = output[-OUTPUT_LIMIT:]
            # its hosts are gone with it: their credentials too
            names = json.loads(row.hosts)
            for host in session.scalars(select(Host).where(Host.name.in_(names))):
                host.state, host.agent_token_hash, host.enrolment_hash = "revoked", None, None
                host.revoked_at = utcnow()
            d = session.get(Deployment, row.deployment_id)
            if d is not None and d.reason and _TEARDOWN_MARK in d.reason:
                done = f"torn down at attempt {row.attempts}]"
                d.reason = d.reason.split(_TEARDOWN_MARK)[0] + _TEARDOWN_MARK + done
            session.commit()
        self._underway.not_before.pop(row_id, None)
        self._committed("torn down", provisioned=row_id)

    def _teardown_failed(self, row_id: int, output: str) -> None:
        with self.sessions() as session:
            row = session.get_one(Provisioned, row_id)
            row.state = "teardown_failed"
            row.attempts += 1
            row.reason = output[-OUTPUT_LIMIT:]
            wait = retry_delay(row.attempts)
            what = (
                f"the teardown of its provisioned environment failed (attempt {row.attempts}, "
                f"tried again in {wait:g} s): {output[-500:]}"
            )
            d = session.get(Deployment, row.deployment_id)
            if d is not None:
                d.reason = (d.reason or "").split(_TEARDOWN_MARK)[0] + f"{_TEARDOWN_MARK}{what}]"
                if self.announcer is not None and notify_of(row.attempts):
                    link = f"{self.announcer.public_url}/deployments/{d.id}"
                    message = teardown_failed(
                        d.app.name, d.environment, d.id, row.attempts, wait, output, link
                    )
                    self.announcer.queue(d, f"provisioned:{row.id}:{row.attempts}", message)
            session.commit()
        self._underway.not_before[row_id] = time.monotonic() + wait
        log.error(
            "teardown failed",
            extra={
                "provisioned": row_id,
                "attempt": row.attempts,
                "retry_in": wait,
                "output": output[-500:],
            },
        )

    # -- shared -------------------------------------------------------------

    def _script_env(self, row_id: int) -> dict[str, str]:
        with self.sessions() as session:
            row = session.get_one(Provisioned, row_id)
            d = session.get_one(Deployment, row.deployment_id)
            return {
                "CONVEYOR_APP": d.app.name,
                "CONVEYOR_ENVIRONMENT": d.environment,
                "CONVEYOR_RELEASE": d.release_id,
                "CONVEYOR_SHA": d.release.sha,
                "CONVEYOR_DEPLOYMENT": str(d.id),
                "CONVEYOR_PROVISION_ID": str(row.id),
            }

    async def _files(self, release: Release, row_id: int) -> Path:
        into = self.data / "work" / f"provision-{row_id}"
        archive = self.store.path_for(release.sha256)
        return await asyncio.to_thread(checks.unpack_release, archive, into)


async def _run(
    command: str, cwd: Path, env: dict[str, str], timeout: float, mask: list[str]
) -> _Outcome:
    """A provision or teardown command: its standard output apart (the host names).

    Output goes to files, not pipes: the agents a provision command leaves running may
    hold whatever it was given (the server's pipes would then never reach their end).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "--noprofile",
            "--norc",
            "-eo",
            "pipefail",
            "-c",
            command,
            cwd=cwd,
            env={k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")} | env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            await asyncio.wait_for(proc.wait(), timeout=timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            return _Outcome(False, "", f"$ {command}: timed out after {timeout:g} s")
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        stdout, stderr = (_read(f) for f in (out, err))
    for secret in mask:
        stdout, stderr = stdout.replace(secret, "***"), stderr.replace(secret, "***")
    status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    shown = (stderr.strip() or stdout.strip())[-OUTPUT_LIMIT:]
    return _Outcome(
        proc.returncode == 0, stdout, f"$ {command}: {status}" + (f"\n{shown}" if shown else "")
    )


def _read(f: IO[bytes]) -> str:
    f.seek(0)
    return f.read(1_000_000).decode(errors="replace")
