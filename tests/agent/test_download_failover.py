"""A release's artifact from another server when the agent's server is gone."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conveyor.agent.bringup import BringUp
from conveyor.agent.installer import Installer, InstallError
from conveyor.agent.link import ServerLink
from tests.agent.conftest import HttpServer, Route
from tests.helpers import free_port

DEAD = "127.0.77.1"  # nothing listens there: a server killed with kill -9


def bring_up(data: Path, link: ServerLink) -> BringUp:
    none: Any = None  # _install needs neither a supervisor nor migrations
    return BringUp(
        data=data,
        link=link,
        installer=Installer(data),
        supervisor=none,
        migrations=none,
        changed=lambda: None,
    )


def spec(tarball: Path) -> Any:
    return SimpleNamespace(
        release="r1",
        artifact="/api/agent/artifacts/r1",
        sha256=hashlib.sha256(tarball.read_bytes()).hexdigest(),
        service=SimpleNamespace(install_hook=None),
    )


async def test_the_artifact_comes_from_the_next_server_when_the_first_is_gone(
    data: Path, good_tarball: Path, http_server: HttpServer
) -> None:
    http_server.routes["/api/agent/artifacts/r1"] = Route(
        body=good_tarball.read_bytes(), require={"Authorization": "Bearer t"}
    )
    dead = f"http://{DEAD}:{free_port(DEAD)}"
    link = ServerLink([dead, http_server.url("")], "web-1", data)
    link.token = "t"
    try:
        release_dir = await bring_up(data, link)._install("sample", spec(good_tarball))
    finally:
        await link.close()
    assert release_dir.is_dir()
    assert link.server == http_server.url("")  # its long-poll and reports moved too
    assert http_server.hits == ["/api/agent/artifacts/r1"]


async def test_with_every_server_gone_the_release_fails_saying_which(
    data: Path, good_tarball: Path
) -> None:
    dead = [f"http://{DEAD}:{free_port(DEAD)}" for _ in range(2)]
    link = ServerLink(dead, "web-1", data)
    link.token = "t"
    try:
        with pytest.raises(InstallError, match=r"download of http://127\.0\.77\.1:\d+/api/agent"):
            await bring_up(data, link)._install("sample", spec(good_tarball))
    finally:
        await link.close()
