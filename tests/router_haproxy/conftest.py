from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conveyor.agent.routing.haproxy import HAProxyRouter
from testbed.backend import Backend
from tests.router_haproxy.support import LoopThread

HAPROXY = shutil.which("haproxy")


@pytest.fixture(scope="session")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    try:
        yield thread
    finally:
        thread.close()


@pytest.fixture(scope="session")
def instances() -> Iterator[dict[str, Backend]]:
    """Four instance processes for the whole session: a1, a2 of rel-a and b1, b2 of rel-b."""
    made = {name: Backend(f"rel-{name[0]}", name).spawn() for name in ("a1", "a2", "b1", "b2")}
    try:
        for backend in made.values():
            backend.wait_ready()
        yield made
    finally:
        for backend in made.values():
            backend.stop()


MakeRouter = Callable[[], HAProxyRouter]


@pytest.fixture
def make_router(loop: LoopThread, tmp_path: Path) -> Iterator[MakeRouter]:
    """A new driver object on this test's workdir; every one made is stopped at the end."""
    made: list[HAProxyRouter] = []

    def make() -> HAProxyRouter:
        made.append(HAProxyRouter(tmp_path / "haproxy"))
        return made[-1]

    try:
        yield make
    finally:
        for router in reversed(made):
            loop.run(router.stop())
            if router.paths.rundir != router.paths.workdir:
                shutil.rmtree(router.paths.rundir, ignore_errors=True)


@pytest.fixture
def router(loop: LoopThread, make_router: MakeRouter) -> HAProxyRouter:
    started = make_router()
    loop.run(started.start())
    return started
