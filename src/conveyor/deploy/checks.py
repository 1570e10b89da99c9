"""Verify checks: HTTP requests to each host's router, and scripts run with $CONVEYOR_URL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from conveyor.config import Environment, Service, effective_routing
from conveyor.config.environment import VerifyCheck
from conveyor.deploy.progress import HostView
from conveyor.protocol import PREVIEW_HEADER
from conveyor.tls import client_tls

OUTPUT_LIMIT = 8000


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    line: str  # one line for the step's log: what was checked and what came back


@dataclass(frozen=True)
class Reach:
    """Where checks reach an app on each host: URLs, and the Host header to send (None:
    the URL's, for an app on its own port)."""

    urls: dict[str, str]
    host_header: str | None = None
    # HTTPS on the shared HTTPS port (an app with tls: its HTTP port only redirects); the
    # certificate is the agent's to check, the app's answer the check's
    https: bool = False

    def script_env(self) -> dict[str, str]:
        first = next(iter(self.urls.values()), "")
        env = {"CONVEYOR_URL": first, "CONVEYOR_URLS": " ".join(self.urls.values())}
        return env | ({"CONVEYOR_HOST": self.host_header} if self.host_header else {})


def reach(
    views: Mapping[str, HostView], hosts: Iterable[str], service: Service, env: Environment
) -> Reach:
    """An app with domains is checked on each host's shared port, by its first name (a
    wildcard's stand-in), under its path prefix; any other on its own port."""
    routing = effective_routing(service, env)
    if not routing.domains:
        return Reach({n: u for n in hosts if (u := views[n].url(service.port))})
    urls: dict[str, str] = {}
    https = routing.tls is not None
    for name in hosts:
        observed = views[name].observed
        url = None
        if observed is not None:
            url = views[name].url(observed.https_port if https else observed.http_port)
        if url is not None:
            urls[name] = (url.replace("http://", "https://", 1) if https else url) + (
                routing.path_prefix
            )
    return Reach(urls, _stand_in(routing.domains), https)


def _stand_in(domains: tuple[str, ...]) -> str:
    """A name the app answers to: its first exact one, else one its wildcard covers."""
    exact = [d for d in domains if "*" not in d]
    if exact:
        return exact[0]
    first = domains[0]
    return "conveyor-verify." + (first.removeprefix("*.") if first != "*" else "invalid")


async def http_check(
    client: httpx.AsyncClient,
    url: str,
    check: VerifyCheck,
    *,
    host: str,
    preview: str | None = None,
    host_header: str | None = None,
) -> CheckResult:
    """One check; with a Host header, the TLS server name (SNI) is that name too."""
    assert check.http is not None
    expect = check.expect or 200
    headers = {PREVIEW_HEADER: preview} if preview else {}
    if host_header:
        headers["Host"] = host_header
    what = f"{check.http.method} {url}{check.http.path} on {host}" + (
        f" (preview of {preview})" if preview else ""
    )
    try:
        response = await client.request(
            check.http.method,
            url + check.http.path,
            headers=headers,
            timeout=check.timeout,
            extensions={"sni_hostname": host_header} if host_header else None,
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
    checks: list[VerifyCheck],
    urls: dict[str, str],
    *,
    preview: str | None = None,
    host_header: str | None = None,
    https: bool = False,
) -> list[CheckResult]:
    """Every http check against every host's router, concurrently (`https`: the routers'
    certificates are not verified here: the agents checked them before serving them)."""
    wanted = [c for c in checks if c.http is not None]
    if not wanted:
        return []
    async with httpx.AsyncClient(verify=_unverified() if https else client_tls()) as client:
        return list(
            await asyncio.gather(
                *(
                    http_check(
                        client, url, check, host=host, preview=preview, host_header=host_header
                    )
                    for host, url in urls.items()
                    for check in wanted
                )
            )
        )


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


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
