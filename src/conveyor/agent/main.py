"""`conveyor agent`: enrol, start the router, adopt instances, then converge forever."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import sys
from pathlib import Path

import httpx

from conveyor.agent.exporter import ExporterError, MetricsExporter
from conveyor.agent.installer import Installer
from conveyor.agent.link import (
    LONG_POLL_MAX,
    EnrolmentError,
    Revoked,
    ServerLink,
    VersionRefused,
)
from conveyor.agent.loop import Reconciler
from conveyor.agent.routing.spec import Router
from conveyor.agent.supervisor import Supervisor
from conveyor.logs import setup_logging
from conveyor.tls import ServerTrust

log = logging.getLogger("conveyor.agent")

LONG_POLL = LONG_POLL_MAX
REPORT_EVERY = 2.0
RETRY_FIRST = 0.5  # seconds before the first retry of a lost server, then doubled
RETRY_MAX = 5.0
# The server refused this agent's version: restarting the same agent cannot help, so its
# unit does not restart on this code (RestartPreventExitStatus, `conveyor service`).
EXIT_VERSION_REFUSED = 3


def make_router(kind: str, data: Path, workers: int = 1) -> Router:
    if kind == "haproxy":
        from conveyor.agent.routing.haproxy import HAProxyRouter

        return HAProxyRouter(data / "haproxy")
    from conveyor.agent.routing.embedded import EmbeddedRouter

    return EmbeddedRouter(data / "router.sock", data / "router.log", workers=workers)


def run_agent(
    *,
    server: str | list[str],
    name: str,
    token: str | None,
    data: Path,
    router: str,
    bind: str,
    metrics: str | None = None,
    trust: ServerTrust | None = None,
    router_workers: int = 1,
    http_port: int = 80,
    https_port: int = 443,
    acme_ca: str | None = None,
) -> int:
    setup_logging(os.environ.get("CONVEYOR_LOG_LEVEL", "info"))
    data.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(
            _main(
                server,
                name,
                token,
                data.resolve(),
                router,
                bind,
                metrics,
                trust or ServerTrust(),
                router_workers,
                http_port,
                https_port,
                acme_ca,
            )
        )
    except (EnrolmentError, ExporterError) as exc:
        what = "enrolment failed" if isinstance(exc, EnrolmentError) else "metrics exporter failed"
        log.error(what, extra={"error": str(exc)})
        print(f"conveyor agent: {exc}", flush=True)
        return 2
    except VersionRefused as exc:
        log.error("server refused this agent's version", extra={"error": str(exc)})
        print(f"conveyor agent: the server refused this agent: {exc}", file=sys.stderr, flush=True)
        return EXIT_VERSION_REFUSED


async def _main(
    server: str | list[str],
    name: str,
    token: str | None,
    data: Path,
    kind: str,
    bind: str,
    metrics: str | None,
    trust: ServerTrust,
    router_workers: int = 1,
    http_port: int = 80,
    https_port: int = 443,
    acme_ca: str | None = None,
) -> int:
    link = ServerLink(server, name, data, trust)
    await link.ensure_credential(token)
    router = make_router(kind, data, router_workers)
    exporter = MetricsExporter(router, name, metrics) if metrics else None
    if exporter is not None:
        await exporter.start()  # a busy port stops the agent before it touches anything
    reconciler = Reconciler(
        data=data,
        name=name,
        link=link,
        router=router,
        installer=Installer(data),
        supervisor=Supervisor(data),
        bind=bind,
        http_port=http_port,
        https_port=https_port,
        acme_ca=acme_ca,
    )
    reconciler.load_local()
    await router.start()
    # the router may have been restarted while the agent was away: give it its routes again
    for spec in reconciler.applied.values():
        await router.apply(spec)
    await reconciler.adopt()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("agent started", extra={"host": name, "router": router.name, "data": str(data)})
    tasks = [
        asyncio.create_task(reconciler.run(stop), name="reconcile"),
        asyncio.create_task(_fetch(link, reconciler, stop), name="fetch"),
        asyncio.create_task(_report(link, reconciler, router, stop), name="report"),
        asyncio.create_task(_watch_router(router, reconciler, stop), name="router-watch"),
    ]
    await stop.wait()
    # instances and the router outlive the agent: an upgrade or restart changes nothing users see
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    fetch = tasks[1]
    refused = None if fetch.cancelled() else fetch.exception()
    if exporter is not None:
        await exporter.close()
    await reconciler.supervisor.close()
    await link.close()
    log.info("agent stopped; instances and router keep running")
    if isinstance(refused, VersionRefused):
        raise refused
    return 0


async def _fetch(link: ServerLink, reconciler: Reconciler, stop: asyncio.Event) -> None:
    """Long-poll the desired state; losing the server keeps the last one in force.

    A lost server is retried soon, then less often (jittered, at most every 5 s): a
    restart is usually over within a second or two, and the deployment it resumes waits
    on what its agents report.
    """
    backoff = RETRY_FIRST
    while not stop.is_set():
        after = reconciler.desired.generation if reconciler.desired else -1
        polled = link.server
        try:
            desired = await link.desired_unless_moved(after, LONG_POLL)
            if desired is None:
                continue  # the report loop found the server gone: poll the next one
            link.answered()
            backoff = RETRY_FIRST
            if reconciler.desired is None or desired.generation != reconciler.desired.generation:
                log.info("desired state", extra={"generation": desired.generation})
                # acted on at once, kept on disk meanwhile (its fsync off the loop)
                reconciler.desired = desired
                reconciler.wake.set()
                await asyncio.to_thread(reconciler.save_desired, desired)
        except VersionRefused:
            stop.set()  # the agent stops (instances keep running) and says why
            raise
        except Revoked as exc:
            reconciler.errors = [f"server refused this agent: {exc}"]
            log.error("credential refused", extra={"error": str(exc)})
            await asyncio.sleep(5)
        except (httpx.HTTPError, ValueError) as exc:
            refused = link.trust.explain(exc)
            if refused:
                # what answers at the server's address is not the server this agent trusts
                log.error(
                    "TLS with the server failed", extra={"error": refused, "retry_in": backoff}
                )
            else:
                log.warning("server unreachable", extra={"error": str(exc), "retry_in": backoff})
            if link.fail_over(polled):
                continue  # another server (sharing the database) answers at once
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, RETRY_MAX)


async def _report(
    link: ServerLink, reconciler: Reconciler, router: Router, stop: asyncio.Event
) -> None:
    """Report every REPORT_EVERY or on a change; a report that failed is sent again
    sooner (from RETRY_FIRST, doubling), so a restarted server hears of its hosts soon."""
    failures = 0
    while not stop.is_set():
        alive = False
        try:
            alive = await router.alive()
            if alive:
                reconciler.metrics = await router.metrics()
        except Exception as exc:
            log.warning("router metrics unavailable", extra={"error": str(exc)})
        reconciler.changed.clear()
        reported = link.server
        try:
            await link.report(reconciler.observed(alive))
            failures = 0
        except (Revoked, VersionRefused):
            failures = 0
        except (httpx.HTTPError, ValueError) as exc:
            log.debug("report failed", extra={"error": str(exc)})
            failures += 1
            if link.fail_over(reported):
                failures = 0  # another server: report to it at once
                continue
        wait = min(RETRY_FIRST * 2 ** (failures - 1), REPORT_EVERY) if failures else REPORT_EVERY
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reconciler.changed.wait(), timeout=wait)


async def _watch_router(router: Router, reconciler: Reconciler, stop: asyncio.Event) -> None:
    """Restart a router that died (kill -9 included) and give it back its routes."""
    while not stop.is_set():
        await asyncio.sleep(0.5)
        try:
            if await router.alive():
                continue
            log.warning("router is down; restarting it")
            await router.start()
            for spec in list(reconciler.applied.values()):
                await router.apply(spec)
            log.info("router restarted with its routes")
            reconciler.wake.set()
        except Exception as exc:
            log.error("router restart failed", extra={"error": str(exc)})
