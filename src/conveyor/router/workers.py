"""Several worker processes behind one admin socket.

With `--workers N` (N > 1) the router process forks N-1 workers before its event loop
starts. Every process opens each app's listener with SO_REUSEPORT, so the kernel spreads
new connections over them. Each worker has an admin socket of its own (`<socket>.w<i>`,
reached by the primary only); the primary's admin API applies a change to itself first
(which checks the spec and the port), then to each worker, and answers once all have it:
a drain or weight change is complete everywhere when the agent gets its answer. Metrics
are the sum over the processes; a shutdown waits for every worker to finish its drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conveyor.routespec import AppMetrics, ReleaseCounters, RouterMetrics

_PR_SET_PDEATHSIG = 1
# Seconds a worker has to answer an admin request (a route change is quick; a stuck
# worker fails the change rather than holding the agent's request).
CALL_TIMEOUT = 5.0


def worker_socket(primary: Path, index: int) -> Path:
    return primary.with_name(f"{primary.name}.w{index}")


def _summed(into: dict[str, ReleaseCounters], counters: dict[str, ReleaseCounters]) -> None:
    for key, c in counters.items():
        total = into.get(key)
        if total is None:
            into[key] = c.model_copy(deep=True)
            continue
        total.requests += c.requests
        total.errors_5xx += c.errors_5xx
        total.connect_failures += c.connect_failures
        total.in_flight += c.in_flight
        total.latency_sum += c.latency_sum
        total.latency_buckets = [
            a + b for a, b in zip(total.latency_buckets, c.latency_buckets, strict=True)
        ]


def sum_metrics(first: RouterMetrics, others: list[RouterMetrics]) -> RouterMetrics:
    """The counters of several processes as one router's (`started_at` is the first's)."""
    apps: dict[str, dict[str, ReleaseCounters]] = {}
    flags: dict[str, dict[str, ReleaseCounters]] = {}
    for metrics in (first, *others):
        for name, app in metrics.apps.items():
            _summed(apps.setdefault(name, {}), app.releases)
            _summed(flags.setdefault(name, {}), app.flags)
    return RouterMetrics(
        backend=first.backend,
        started_at=first.started_at,
        apps={
            name: AppMetrics(app=name, releases=rel, flags=flags.get(name, {}))
            for name, rel in apps.items()
        },
    )


def die_with_parent() -> None:
    """Linux: SIGTERM this process when the primary ends (kill -9 included)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


async def call(path: Path, method: str, target: str, body: bytes = b"") -> tuple[int, Any]:
    """One request to a worker's admin socket: (status, JSON body); OSError if it fails."""
    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            return await _call(path, method, target, body)
    except TimeoutError as exc:
        raise OSError(f"worker at {path} did not answer {method} {target} in time") from exc


async def _call(path: Path, method: str, target: str, body: bytes) -> tuple[int, Any]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(
            f"{method} {target} HTTP/1.1\r\nHost: router\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, payload = data.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise OSError(f"worker at {path} answered {data[:80]!r}")
    try:
        decoded = json.loads(payload) if payload else None
    except ValueError:
        decoded = payload.decode(errors="replace")
    return int(parts[1]), decoded


class Workers:
    """The primary's view of its worker processes."""

    def __init__(self, sockets: list[Path], pids: list[int]) -> None:
        self.sockets = sockets
        self.pids = pids

    async def ready(self, timeout: float = 15.0) -> None:
        """Wait until every worker answers on its admin socket."""
        async with asyncio.timeout(timeout):
            for path in self.sockets:
                while True:
                    try:
                        status, _ = await call(path, "GET", "/healthz")
                    except OSError:
                        status = 0
                    if status == 200:
                        break
                    await asyncio.sleep(0.02)

    async def fan_out(self, method: str, target: str, body: bytes = b"") -> list[tuple[int, Any]]:
        """The same admin request to every worker, at once."""
        return list(
            await asyncio.gather(*(call(path, method, target, body) for path in self.sockets))
        )

    async def metrics(self) -> list[RouterMetrics]:
        answers = await self.fan_out("GET", "/metrics")
        return [RouterMetrics.model_validate(body) for _, body in answers]

    async def watch(self, on_lost: Callable[[int], None]) -> None:
        """Call `on_lost(pid)` if a worker exits on its own (the router then stops, and the
        agent restarts it whole with its routes)."""
        while True:
            await asyncio.sleep(0.5)
            for pid in list(self.pids):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    self.pids.remove(pid)
                    on_lost(pid)

    async def stop(self, timeout: float) -> None:
        """Ask every worker to stop (each drains), and wait until all have exited."""
        with contextlib.suppress(OSError):
            await self.fan_out("POST", "/shutdown")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.pids:
            for pid in list(self.pids):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    self.pids.remove(pid)
            if self.pids and loop.time() > deadline:
                for pid in self.pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                deadline = loop.time() + 5.0
            if self.pids:
                await asyncio.sleep(0.05)
