"""The controller's FastAPI application: API, webhooks, and the engine in its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from conveyor import __version__
from conveyor.deploy.desired import Notifier
from conveyor.deploy.flagrollouts import FlagRollouts
from conveyor.deploy.orchestrator import DeployEngine
from conveyor.deploy.records import start_chain
from conveyor.forge.reporter import Reporter
from conveyor.notify import Announcer, Courier
from conveyor.pipeline.engine import Engine
from conveyor.pipeline.runs import PULL_REFS
from conveyor.server import busy, edge, idempotency, metrics
from conveyor.server.accesslog import AccessLog
from conveyor.server.api import (
    agents,
    apps,
    controls,
    deployments,
    dora,
    environments,
    flags,
    hosts,
    keys,
    notifications,
    releases,
    runners,
    runs,
    status,
    tokens,
    unleash,
)
from conveyor.server.credentials import AgentCredentials
from conveyor.server.fanout import AgentDesk
from conveyor.server.fastpath import FastPath, health
from conveyor.server.headers import SecurityHeaders
from conveyor.server.hooks import gitea, github, gitlab
from conveyor.server.limits import BodyLimit
from conveyor.server.web import pages as web
from conveyor.store.cluster import Cluster
from conveyor.store.models import Run
from conveyor.threads import in_agent_thread


class _ConveyorAPI(FastAPI):
    """FastAPI with the security headers as its outermost layer, so that even the 500 of
    Starlette's error middleware (outside every added middleware) carries them; and the
    fast path (fastpath.py) in front of it all."""

    fast: FastPath | None = None
    access: AccessLog | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self.access is not None:
                send = self.access.watch(scope, send)
            if self.fast is not None and await self.fast.answer(scope, send):
                return
        await super().__call__(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack())


GC_THRESHOLDS = (10_000, 20, 20)  # young objects, then collections of each generation


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    public_url: str  # links in notifications; and in answers when public_url_given
    public_url_given: bool = True  # --url: else answers use the URL each request came to
    parallel_runs: int = 2
    threads: int = 40  # anyio's limiter: sync routes and page renders at once
    fast_path: bool = True  # /healthz and fresh kept reads before FastAPI (fastpath.py)
    access_log: bool = False  # write uvicorn's access lines (accesslog.py; serve.py: on)
    retry_after: int = 5  # seconds a 503 for a busy database asks the client to wait
    server_fingerprint: str | None = None  # sha256 of the TLS certificate, when serving TLS


def create_app(
    settings: Settings,
    sessions: sessionmaker[Session],
    background: sessionmaker[Session] | None = None,
    cluster: Cluster | None = None,
) -> FastAPI:
    """The application; `background` is the engines' own pool (default: `sessions`);
    `cluster`: the other servers on the same PostgreSQL database (store/cluster.py)."""
    notifier = Notifier()
    background = background or sessions

    def promote(session: Session, run: Run) -> None:
        deployment = start_chain(session, run, engine.paths.mirror(run.app.name))
        if deployment is not None:
            if deployment.state == "failed":  # refused at once (e.g. not on the branch)
                announcer.deployment_ended(deployment)
            deployer.wake()

    def ended(session: Session, run: Run) -> None:
        # a pull request's result goes to its forge (forge/reporter.py), not to the team
        if not (run.ref or "").startswith(PULL_REFS):
            announcer.run_ended(session, run)

    engine = Engine(
        background,
        settings.data_dir,
        parallel=settings.parallel_runs,
        on_release=promote,
        on_end=ended,
    )
    announcer = Announcer(settings.public_url, settings.data_dir, engine.paths.workspace)
    courier = Courier(background)
    reporter = Reporter(background, settings.public_url)
    announcer.on_queued = courier.wake
    deployer = DeployEngine(
        background, settings.data_dir, notifier, engine.store, engine.paths.mirror, announcer
    )
    guard = FlagRollouts(background, notifier, announcer)
    desk = AgentDesk(sessions, in_agent_thread)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # as many request threads as the request pool has connections for (serve.py)
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threads
        notifier.bind()
        # what exists now (modules, routes, mappers, schemas) lives as long as the process:
        # out of the collector's sight, a full collection under load takes milliseconds,
        # not the hundreds it took while it walked all of it (the event loop waits meanwhile)
        gc.collect()
        gc.freeze()
        # and fewer collections: a request allocates thousands of short-lived objects, and
        # with the default thresholds (700, 10, 10) enough of them lived through young
        # collections to start a full one every few seconds under load (13 in 40 s of
        # bench/control_plane.py, up to 120 ms each, the loop stopped); with these, one
        # (memory alike: ~180 MB either way)
        gc.set_threshold(*GC_THRESHOLDS)
        if cluster is not None:
            # the liveness lock is held before this server takes any lease or run
            await asyncio.to_thread(cluster.start, notifier.woken)
            notifier.publish = cluster.publish
            engine.cluster = deployer.cluster = cluster
        tasks = [
            asyncio.create_task(engine.serve(), name="engine"),
            asyncio.create_task(deployer.serve(), name="deployer"),
            asyncio.create_task(courier.serve(), name="courier"),
            asyncio.create_task(guard.serve(), name="flag-rollouts"),
            asyncio.create_task(reporter.serve(), name="reporter"),
            asyncio.create_task(deployer.certificates.serve(), name="acme-renewals"),
        ]
        try:
            yield
        finally:
            if api.access is not None:
                api.access.flush()
            deployer.certificates.stop()
            await deployer.stop()
            await engine.stop()
            await courier.stop()
            await guard.stop()
            await reporter.stop()
            await desk.stop()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if cluster is not None:
                await asyncio.to_thread(cluster.stop)

    api = _ConveyorAPI(
        title="conveyor",
        version=__version__,
        description="Self-hosted continuous deployment. Every /api route needs "
        "`Authorization: Bearer <token>` with the role named in its `x-role`.",
        lifespan=lifespan,
    )
    api.state.settings = settings
    api.state.sessions = sessions
    api.state.engine = engine
    api.state.deployer = deployer
    api.state.notifier = notifier
    api.state.agent_desk = desk
    api.state.agent_credentials = AgentCredentials(sessions, in_agent_thread)
    api.state.courier = courier
    api.state.flag_rollouts = guard
    api.state.reporter = reporter
    # routes are matched in this order, one after the other: the agents' first (a
    # thousand long-polls answered at once, each asking again, pay no walk past the rest)
    for module in (
        agents,
        apps,
        runs,
        releases,
        deployments,
        environments,
        controls,
        dora,
        flags,
        notifications,
        status,
        tokens,
        runners,
        unleash,
        keys,
        hosts,
        github,
        gitlab,
        gitea,
        metrics,
    ):
        _document_roles(module.router)
        edge.document(module.router)
        api.include_router(module.router)

    @api.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        # on the event loop, no database, no thread: it answers while both are busy (the
        # fast path answers a GET before FastAPI; this route is its schema and fallback)
        return health()

    web.install(api)
    busy.install(api, settings.retry_after)
    idempotency.install(api)
    edge.install(api)
    api.add_middleware(BodyLimit)
    if settings.fast_path:
        api.fast = FastPath([status.cached, runs.cached])
    if settings.access_log:
        api.access = AccessLog()
    return api


def _document_roles(router: APIRouter) -> None:
    """Name each route's role in OpenAPI (x-role), read from its require_* dependency."""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        for dep in route.dependant.dependencies:
            name = getattr(dep.call, "__name__", "")
            if name.startswith("require_"):
                route.openapi_extra = {**(route.openapi_extra or {}), "x-role": name[8:]}
