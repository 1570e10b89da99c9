from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conveyor.agent.routing.embedded import EmbeddedRouter
from tests.router.backend import Backend
from tests.router.support import BACKEND_TIMEOUT, Apps, run


@pytest.fixture(scope="session")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRouter]:
    """One router process for the whole suite (tests use their own apps and ports)."""
    base = tmp_path_factory.mktemp("router")
    embedded = EmbeddedRouter(
        base / "router.sock", base / "router.log", backend_timeout=BACKEND_TIMEOUT
    )
    run(embedded.start())
    try:
        yield embedded
    finally:
        run(embedded.stop())


@pytest.fixture
def apps(router: EmbeddedRouter) -> Iterator[Apps]:
    handle = Apps(router)
    try:
        yield handle
    finally:
        handle.cleanup()


@pytest.fixture
def instances() -> Iterator[Callable[..., list[Backend]]]:
    """Start backends: instances("a", "b") -> two instances answering as releases a and b."""
    started: list[Backend] = []

    def make(*releases: str, **options: Any) -> list[Backend]:
        made = [Backend(release, **options).start() for release in releases]
        started.extend(made)
        return made

    try:
        yield make
    finally:
        for backend in started:
            backend.stop()
