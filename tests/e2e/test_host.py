"""One host, for real: server, agent, router and the sample app as processes on 127.0.0.N.

The core promise: deploy, warm and cold rollback, and failed deploys under
concurrent keep-alive load lose no request, with both router backends.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.demo.sample import sample_config, write_sample_app
from tests.fleet import AgentProcess, LoadGenerator
from tests.helpers import ServerProcess, commit, free_port, plain_http, wait_for

pytestmark = pytest.mark.slow


class World:
    """A server with the sample app built as several releases, and one agent."""

    def __init__(self, server: ServerProcess, tmp: Path, router: str, address: str) -> None:
        self.server = server
        self.port = free_port(address)
        self.repo = tmp / "sample"
        write_sample_app(self.repo, "sample", port=self.port)
        server.add_app("sample", self.repo)
        self.releases: dict[str, str] = {}
        self.agent = AgentProcess(server, "web-1", tmp / "agent", address=address, router=router)
        self.url = f"http://{address}:{self.port}/"

    def build(self, label: str, **config: Any) -> str:
        port = config.pop("port_override", self.port)
        if config or label != "v1" or port != self.port:
            text = sample_config("sample", port=port, **config)
            commit(self.repo, {"conveyor.yml": text, "VERSION": label})
        run = self.server.wait_run(self.server.post("/api/apps/sample/runs", {})["id"])
        assert run["state"] == "succeeded", run
        self.releases[label] = run["release"]
        return str(run["release"])

    def serving(self) -> str:
        return str(plain_http.get(self.url, timeout=5).json()["release"])


@contextlib.contextmanager
def world_on(router: str, server: ServerProcess, tmp_path: Path, address: str) -> Iterator[World]:
    """A World whose agent runs `router` on `address`; everything torn down after."""
    if router == "haproxy" and shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (scripts/setup.sh installs it)")
    w = World(server, tmp_path, router, address)
    try:
        yield w
    finally:
        w.agent.stop_everything()


@pytest.fixture(params=["embedded", "haproxy"])
def world(request: pytest.FixtureRequest, server: ServerProcess, tmp_path: Path) -> Iterator[World]:
    with world_on(request.param, server, tmp_path, "127.0.0.2") as w:
        yield w


def test_deploy_rollback_and_failed_deploys_lose_no_request(world: World) -> None:
    v1 = world.build("v1")
    v2 = world.build("v2", keep_warm="10m")
    v3 = world.build("v3", keep_warm="0s")
    crash = world.build("crash", start="exit 3")
    sick = world.build("sick", health_status=500, health_timeout="3s")
    agent = world.agent.start()

    agent.set("sample", {v1: 100})
    agent.wait_routed("sample", {v1: 100})
    assert world.serving() == v1

    with LoadGenerator(world.url, clients=8, rate=25) as load:
        wait_for(lambda: load.result.ok > 200)
        agent.set("sample", {v2: 100})  # deploy
        agent.wait_routed("sample", {v2: 100})
        wait_for(lambda: world.serving() == v2)
        assert agent.release("sample", v1)["phase"] in ("draining", "warm")  # type: ignore[index]

        agent.set("sample", {v1: 100})  # warm rollback: a router switch
        agent.wait_routed("sample", {v1: 100}, timeout=10)

        agent.set("sample", {v3: 100})  # v3 with keep_warm 0: v1 is stopped after draining
        agent.wait_routed("sample", {v3: 100})
        wait_for(lambda: agent.release("sample", v1) is None, timeout=30)

        agent.set("sample", {v1: 100})  # cold rollback: v1 restarts, then takes traffic
        agent.wait_routed("sample", {v1: 100})

        for bad in (crash, sick):  # failed deploys change nothing users see
            agent.set("sample", {bad: 100})
            wait_for(
                lambda b=bad: (agent.release("sample", b) or {}).get("phase") == "failed",
                timeout=30,
            )
            assert world.serving() == v1
            failed = agent.release("sample", bad)
            assert failed and failed["error"], failed
        sent_before = load.result.sent
        wait_for(lambda: load.result.sent > sent_before + 200)
    result = load.result
    assert result.sent > 1000  # 200 a second, through six switches
    assert result.failures == 0, (result.errors[:5], result.statuses)
    assert set(result.releases) >= {v1, v2, v3}
    assert crash not in result.releases and sick not in result.releases
    host = world.server.get("/api/hosts/web-1")
    app = host["observed"]["apps"][0]
    assert app["current"] == v1


def test_only_the_last_previous_release_stays_warm(server: ServerProcess, tmp_path: Path) -> None:
    # keep_warm (10m) applies to the last keep_warm_releases (default 1) retired releases:
    # four quick deploys leave one warm instance behind, not three
    with world_on("embedded", server, tmp_path, "127.0.5.1") as world:
        v1, v2, v3, v4 = (world.build(label) for label in ("v1", "v2", "v3", "v4"))
        agent = world.agent.start()
        for release in (v1, v2, v3, v4):
            agent.set("sample", {release: 100})
            agent.wait_routed("sample", {release: 100})
        wait_for(
            lambda: agent.release("sample", v1) is None and agent.release("sample", v2) is None
        )
        warm = agent.release("sample", v3)
        assert warm is not None and warm["phase"] in ("draining", "warm"), warm
        running = [r["release"] for r in agent.app("sample")["releases"]]  # type: ignore[index]
        assert sorted(running) == sorted([v3, v4])

        agent.set("sample", {v3: 100})  # a rollback to it is a weight switch: same process
        agent.wait_routed("sample", {v3: 100}, timeout=10)
        assert world.serving() == v3
        back = agent.release("sample", v3)
        assert back is not None and back["pid"] == warm["pid"], (warm, back)


def _logged(agent: AgentProcess, msg: str, release: str) -> bool:
    """Whether the agent's log has this message about this release."""
    for line in agent.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("msg") == msg and entry.get("release") == release:
            return True
    return False


def test_agent_killed_mid_deploy_adopts_its_instances(world: World) -> None:
    v1 = world.build("v1")
    v2 = world.build("v2")
    agent = world.agent.start()
    agent.set("sample", {v1: 100})
    agent.wait_routed("sample", {v1: 100})
    pid_v1 = agent.release("sample", v1)["pid"]  # type: ignore[index]

    with LoadGenerator(world.url, clients=8, rate=25) as load:
        agent.set("sample", {v2: 100})
        # mid-deploy: v2 unpacked, its instance starting, v1 still current. Read from the
        # agent's own log, not from its reports (written by the server in batches, half a
        # second late: the switch could be done by then)
        wait_for(lambda: _logged(agent, "unpacked", v2), interval=0.02)
        agent.kill()
        agent.start()
        agent.wait_routed("sample", {v2: 100})
        wait_for(lambda: world.serving() == v2)
    assert load.result.failures == 0, (load.result.errors[:5], load.result.statuses)
    # v1 was adopted (same process), not restarted
    old = agent.release("sample", v1)
    assert old is not None and old["pid"] == pid_v1 and old["phase"] in ("draining", "warm")

    def converged() -> bool:
        host = world.server.get("/api/hosts/web-1")
        return (
            bool(host["observed"]["converged"]) and host["applied_generation"] == host["generation"]
        )

    wait_for(converged, timeout=30)


def test_router_killed_is_restarted_with_its_weights(world: World) -> None:
    v1 = world.build("v1")
    v2 = world.build("v2")
    agent = world.agent.start()
    agent.set("sample", {v1: 50, v2: 50})
    agent.wait_routed("sample", {v1: 50, v2: 50})
    import os
    import signal

    from tests.fleet import _pids_with_env

    needle = "conveyor.router" if agent.router == "embedded" else "haproxy.cfg"
    router_pids = [
        p
        for p in _pids_with_env(str(agent.data))
        if needle in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
    ]
    assert router_pids, "no router process found"
    for pid in router_pids:
        os.kill(pid, signal.SIGKILL)
    seen = wait_for(lambda: _sample(world, 200), timeout=30, interval=0.5)
    assert set(seen) == {v1, v2}
    assert 0.3 < seen[v1] / 200 < 0.7


def _sample(world: World, n: int) -> dict[str, int] | None:
    counts: dict[str, int] = {}
    try:
        with httpx.Client(timeout=2) as client:
            for _ in range(n):
                release = client.get(world.url).json()["release"]
                counts[release] = counts.get(release, 0) + 1
    except httpx.HTTPError:
        return None
    return counts
