"""A real Reconciler on a real data directory, with a router that only remembers its routes.

Used in-process by the tests and, for kill -9 tests, as a child process (CHILD_SCRIPT).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from conveyor.agent.installer import Installer
from conveyor.agent.link import ServerLink
from conveyor.agent.loop import Reconciler
from conveyor.agent.routing.spec import RouteSpec
from conveyor.agent.supervisor import Supervisor
from conveyor.protocol import (
    DesiredApp,
    DesiredRelease,
    DesiredState,
    MigrateRequest,
    ObservedRelease,
    RouterMetrics,
    ServiceSpec,
)
from tests.agent.conftest import APP_COMMAND, APP_SOURCE, file, make_tarball
from tests.helpers import wait_for_async


class MemoryRouter:
    """The Router seam, in memory: what it was told, nothing served."""

    name = "memory"

    def __init__(self) -> None:
        self.routes: dict[str, RouteSpec] = {}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def alive(self) -> bool:
        return True

    async def apply(self, spec: RouteSpec) -> None:
        self.routes[spec.app] = spec

    async def remove(self, app: str) -> None:
        self.routes.pop(app, None)

    async def metrics(self) -> RouterMetrics:
        return RouterMetrics(backend=self.name, started_at=0.0)

    def weights(self, app: str) -> dict[str, int]:
        spec = self.routes.get(app)
        return {t.release: t.weight for t in spec.targets} if spec else {}


def make_reconciler(data: Path, server: str) -> Reconciler:
    return Reconciler(
        data=data,
        name="web-1",
        link=ServerLink(server, "web-1", data),
        router=MemoryRouter(),
        installer=Installer(data),
        supervisor=Supervisor(data, poll_interval=0.05, startup_window=0.2),
        bind="127.0.0.1",
    )


def app_artifact(path: Path) -> tuple[bytes, str]:
    """A release artifact holding the tiny HTTP app (conftest.APP_SOURCE); its sha256."""
    body = make_tarball(path, [file("app.py", APP_SOURCE.encode())]).read_bytes()
    return body, hashlib.sha256(body).hexdigest()


def desired(
    generation: int,
    sha256: str,
    *,
    release: str = "r1",
    migrate: MigrateRequest | None = None,
    env: dict[str, str] | None = None,
) -> DesiredState:
    """One app `shop` on this host: one release taking all traffic."""
    spec = DesiredRelease(
        release=release,
        sha256=sha256,
        artifact=f"/artifacts/{release}",
        weight=100,
        service=ServiceSpec(
            start=APP_COMMAND, port=18000, health_interval=0.05, health_timeout=10, env=env or {}
        ),
        migrate=migrate,
    )
    return DesiredState(
        host="web-1", generation=generation, apps=[DesiredApp(app="shop", releases=[spec])]
    )


def observed(reconciler: Reconciler, release: str = "r1") -> ObservedRelease | None:
    for app in reconciler.observed(router_alive=True).apps:
        for found in app.releases:
            if found.release == release:
                return found
    return None


async def until(predicate: Callable[[], object], timeout: float = 20.0) -> None:
    await wait_for_async(predicate, timeout=timeout, interval=0.02)


@contextlib.asynccontextmanager
async def running(reconciler: Reconciler) -> AsyncIterator[Reconciler]:
    """The reconciler's loop in the background, as the agent runs it (adopt first)."""
    reconciler.load_local()
    await reconciler.adopt()
    stop = asyncio.Event()
    task = asyncio.create_task(reconciler.run(stop))
    try:
        yield reconciler
    finally:
        # like an agent that stops: instances keep running, background work is cancelled
        stop.set()
        reconciler.wake.set()
        await task
        for rt in reconciler.runtimes.values():
            if rt.task is not None and not rt.task.done():
                rt.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await rt.task
        await reconciler.supervisor.close()
        await reconciler.link.close()


# An agent as a child process, to be killed with SIGKILL: argv = data dir, server URL.
CHILD_SCRIPT = """\
import asyncio, sys
from pathlib import Path
from tests.agent.reconciling import make_reconciler

async def main():
    reconciler = make_reconciler(Path(sys.argv[1]), sys.argv[2])
    reconciler.load_local()
    await reconciler.adopt()
    await reconciler.run(asyncio.Event())

asyncio.run(main())
"""
