"""Verify checks: HTTP requests to each host's router, and scripts run with $CONVEYOR_URL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from conveyor.config.environment import VerifyCheck
from conveyor.protocol import PREVIEW_HEADER
from conveyor.tls import client_tls

OUTPUT_LIMIT = 8000


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    line: str  # one line for the step's log: what was checked and what came back


async def http_check(
    client: httpx.AsyncClient,
    url: str,
    check: VerifyCheck,
    *,
    host: str,
    preview: str | None = None,
) -> CheckResult:
    assert check.http is not None
    expect = check.expect or 200
    headers = {PREVIEW_HEADER: preview} if preview else {}
    what = f"{check.http.method} {url}{check.http.path} on {host}" + (
        f" (preview of {preview})" if preview else ""
    )
    try:
        response = await client.request(
            check.http.method, url + check.http.path, headers=headers, timeout=check.timeout
        )
    except httpx.HTTPError as exc:
        return CheckResult(False, f"{what}: {type(exc).__name__}: {exc}")
    if response.status_code != expect:
        body = response.text[:200].strip()
        return CheckResult(
            False,
            f"{what}: expected {expect}, got {response.status_code}"
            + (f": {body}" if body else ""),
        )
    return CheckResult(True, f"{what}: {response.status_code} as expected")


async def http_checks(
    checks: list[VerifyCheck], urls: dict[str, str], *, preview: str | None = None
) -> list[CheckResult]:
    """Every http check against every host's router, concurrently."""
    wanted = [c for c in checks if c.http is not None]
    if not wanted:
        return []
    async with httpx.AsyncClient(verify=client_tls()) as client:
        return list(
            await asyncio.gather(
                *(
                    http_check(client, url, check, host=host, preview=preview)
                    for host, url in urls.items()
                    for check in wanted
                )
            )
        )


def unpack_release(archive: Path, into: Path) -> Path:
    """The release's files on the server, for verify scripts that ship with it."""
    if (into / ".complete").exists():
        return into
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(into, filter="data")
    (into / ".complete").touch()
    return into


async def run_script(
    command: str, cwd: Path, env: dict[str, str], timeout: float, mask: list[str]
) -> CheckResult:
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
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        await proc.wait()
        return CheckResult(False, f"$ {command}: timed out after {timeout:g} s")
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        raise
    text = out.decode(errors="replace")
    for secret in mask:
        text = text.replace(secret, "***")
    text = text[-OUTPUT_LIMIT:].rstrip()
    status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    return CheckResult(
        proc.returncode == 0, f"$ {command}: {status}" + (f"\n{text}" if text else "")
    )
