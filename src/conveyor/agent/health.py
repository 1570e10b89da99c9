"""Health checks of an instance: GET a path until it answers 2xx (any 2xx, like kamal-proxy)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from conveyor.tls import client_tls

__all__ = ["HealthResult", "ProbeResult", "probe", "wait_healthy"]

PROBE_TIMEOUT = 5.0

AbortCheck = Callable[[], bool | str | None]


@dataclass(frozen=True)
class ProbeResult:
    """One health check: the status it got, or the error that stopped it."""

    url: str
    ok: bool
    status: int | None
    error: str | None
    elapsed: float

    @property
    def detail(self) -> str:
        if self.status is not None:
            return f"HTTP {self.status}"
        return self.error or "no answer"


@dataclass(frozen=True)
class HealthResult:
    """The outcome of waiting for an instance to be healthy, with the last check's answer."""

    url: str
    ok: bool
    attempts: int
    elapsed: float
    status: int | None  # last HTTP status received, if any
    error: str | None  # last error (connection refused, timeout...), if the last check had one
    aborted: str | None = None  # why the wait stopped before its timeout

    @property
    def detail(self) -> str:
        """One line for a report: what happened and what the last check saw."""
        last = f"HTTP {self.status}" if self.status is not None else (self.error or "no answer")
        if self.ok:
            return f"{self.url} healthy after {self.attempts} check(s), {self.elapsed:.1f}s: {last}"
        if self.aborted:
            return (
                f"stopped waiting for {self.url} after {self.elapsed:.1f}s: {self.aborted} "
                f"(last check: {last})"
            )
        return (
            f"{self.url} not healthy after {self.attempts} check(s) in {self.elapsed:.1f}s; "
            f"last check: {last}"
        )


def health_url(host: str, port: int, path: str) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/{path.lstrip('/')}"


async def probe(
    host: str,
    port: int,
    path: str,
    timeout: float = PROBE_TIMEOUT,
    client: httpx.AsyncClient | None = None,
) -> ProbeResult:
    """GET the health path once; any 2xx is healthy, redirects are not followed."""
    url = health_url(host, port, path)
    started = time.monotonic()
    # loopback: proxies from the environment must not apply
    http = client or httpx.AsyncClient(trust_env=False, verify=client_tls())
    try:
        response = await http.get(url, timeout=timeout, follow_redirects=False)
        status = response.status_code
        return ProbeResult(url, 200 <= status < 300, status, None, time.monotonic() - started)
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return ProbeResult(url, False, None, error, time.monotonic() - started)
    finally:
        if client is None:
            await http.aclose()


async def wait_healthy(
    host: str,
    port: int,
    path: str,
    interval: float = 1.0,
    timeout: float = 30.0,
    should_abort: AbortCheck | None = None,
    *,
    probe_timeout: float = PROBE_TIMEOUT,
    client: httpx.AsyncClient | None = None,
) -> HealthResult:
    """Check every `interval` until a 2xx, `timeout` passes, or should_abort says to stop.

    should_abort is called before each check; a truthy answer ends the wait (a string
    answer is the reason reported), e.g. when the instance's process has died.
    """
    url = health_url(host, port, path)
    started = time.monotonic()
    deadline = started + timeout
    http = client or httpx.AsyncClient(trust_env=False, verify=client_tls())
    attempts = 0
    last: ProbeResult | None = None

    def result(ok: bool, aborted: str | None = None) -> HealthResult:
        return HealthResult(
            url=url,
            ok=ok,
            attempts=attempts,
            elapsed=time.monotonic() - started,
            status=last.status if last else None,
            error=last.error if last else None,
            aborted=aborted,
        )

    try:
        while True:
            if should_abort is not None:
                reason = should_abort()
                if reason:
                    return result(False, reason if isinstance(reason, str) else "aborted")
            remaining = deadline - time.monotonic()
            attempts += 1
            last = await probe(
                host, port, path, timeout=max(0.1, min(probe_timeout, remaining)), client=http
            )
            if last.ok:
                return result(True)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return result(False)
            # the interval runs from the start of one check to the start of the next
            await asyncio.sleep(max(0.0, min(interval - last.elapsed, remaining)))
    finally:
        if client is None:
            await http.aclose()
