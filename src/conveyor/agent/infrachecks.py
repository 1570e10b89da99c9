"""Infrastructure checks on a host, before a deployment moves traffic (protocol/checks.py).

The desired state lists requests by id; each runs once, its checks one after the other,
and its result is reported with the observed state until the request leaves the desired
state. The verdicts are pure functions; the probes (a TCP connect, a TLS handshake,
statvfs, a mount test, a shell command) are the I/O around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from conveyor.protocol import CheckOutcome, ChecksRequest, ChecksResult, InfraCheck

OUTPUT_LIMIT = 300
DAY = 86400.0


def disk_verdict(free: int, total: int, min_free: float) -> tuple[bool, str]:
    share = free / total if total else 0.0
    text = f"{share * 100:.1f}% free ({free // 2**20} MiB of {total // 2**20} MiB)"
    if share < min_free:
        return False, f"{text}, below the {min_free * 100:g}% required"
    return True, text


def tls_verdict(not_after: float, now: float, min_days: int) -> tuple[bool, str]:
    left = (not_after - now) / DAY
    until = datetime.fromtimestamp(not_after, UTC).strftime("%Y-%m-%d")
    if left < min_days:
        return False, f"the certificate expires {until}, {left:.1f} days left, below {min_days}"
    return True, f"valid until {until} ({left:.0f} days left)"


def mount_verdict(exists: bool, is_mount: bool, path: str) -> tuple[bool, str]:
    if not exists:
        return False, f"{path} does not exist"
    if not is_mount:
        return False, f"{path} is not a mount point (nothing is mounted there)"
    return True, f"{path} is mounted"


async def _tcp(check: InfraCheck) -> tuple[bool, str]:
    host, _, port = check.target.rpartition(":")
    host = host.strip("[]")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), check.timeout)
    except TimeoutError:
        return False, f"no answer within {check.timeout:g}s"
    except OSError as exc:
        return False, f"cannot connect: {exc.strerror or exc}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, "accepts connections"


async def _tls(check: InfraCheck) -> tuple[bool, str]:
    context = ssl.create_default_context()  # the chain and the host name are verified
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(
                check.target, check.port, ssl=context, server_hostname=check.target
            ),
            check.timeout,
        )
    except TimeoutError:
        return False, f"no TLS handshake within {check.timeout:g}s"
    except ssl.SSLCertVerificationError as exc:
        return False, f"certificate not valid for {check.target}: {exc.verify_message}"
    except (OSError, ssl.SSLError) as exc:
        return False, f"TLS failed: {exc}"
    cert = writer.get_extra_info("peercert") or {}
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    not_after = cert.get("notAfter")
    if not isinstance(not_after, str):
        return False, "the server sent no certificate"
    return tls_verdict(ssl.cert_time_to_seconds(not_after), time.time(), check.min_days)


def _disk(check: InfraCheck) -> tuple[bool, str]:
    try:
        usage = shutil.disk_usage(check.target)
    except OSError as exc:
        return False, f"cannot read {check.target}: {exc.strerror or exc}"
    return disk_verdict(usage.free, usage.total, check.min_free)


def _mount(check: InfraCheck) -> tuple[bool, str]:
    path = check.target
    return mount_verdict(os.path.exists(path), os.path.ismount(path), path)


async def _command(check: InfraCheck, cwd: Path, env: dict[str, str]) -> tuple[bool, str]:
    cwd.mkdir(parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        check.target,
        cwd=cwd,
        env={**os.environ, **env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), check.timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        await proc.wait()
        return False, f"timed out after {check.timeout:g}s"
    lines = out.decode(errors="replace").strip().splitlines()
    last = lines[-1][:OUTPUT_LIMIT] if lines else ""
    code = proc.returncode
    if code != 0:
        return False, f"exit {code}" + (f": {last}" if last else "")
    return True, last or "exit 0"


class InfraChecks:
    """The host's checks: runs each requested id once and keeps its result."""

    def __init__(self, shared_dir: Callable[[str], Path], on_done: Callable[[], None]) -> None:
        self.shared_dir = shared_dir
        self.on_done = on_done
        self._results: dict[str, ChecksResult] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def want(self, requests: list[ChecksRequest]) -> None:
        """Start the requests not seen yet; forget those the desired state dropped."""
        wanted = {r.id for r in requests}
        for gone in [i for i in self._results if i not in wanted]:
            self._results.pop(gone, None)
            task = self._tasks.pop(gone, None)
            if task is not None:
                task.cancel()
        for request in requests:
            if request.id in self._results:
                continue
            self._results[request.id] = ChecksResult(id=request.id, state="running")
            self._tasks[request.id] = asyncio.create_task(
                self._run(request), name=f"checks-{request.id}"
            )

    def results(self) -> list[ChecksResult]:
        return list(self._results.values())

    async def _run(self, request: ChecksRequest) -> None:
        outcomes: list[CheckOutcome] = []
        env = {"CONVEYOR_APP": request.app, "CONVEYOR_ENVIRONMENT": request.environment}
        for check in request.checks:
            try:
                ok, detail = await self._one(check, self.shared_dir(request.app), env)
            except Exception as exc:  # a probe's bug is a failed check, not a dead agent
                ok, detail = False, f"could not run the check: {exc}"
            outcomes.append(CheckOutcome(check=check.label(), ok=ok, detail=detail[:2000]))
            self._results[request.id] = ChecksResult(
                id=request.id, state="running", outcomes=list(outcomes)
            )
        state = "passed" if all(o.ok for o in outcomes) else "failed"
        self._results[request.id] = ChecksResult(id=request.id, state=state, outcomes=outcomes)
        self._tasks.pop(request.id, None)
        self.on_done()

    async def _one(self, check: InfraCheck, cwd: Path, env: dict[str, str]) -> tuple[bool, str]:
        if check.kind == "tcp":
            return await _tcp(check)
        if check.kind == "tls":
            return await _tls(check)
        if check.kind == "disk":
            return await asyncio.to_thread(_disk, check)
        if check.kind == "mount":
            return await asyncio.to_thread(_mount, check)
        return await _command(check, cwd, env)
