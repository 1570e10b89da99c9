"""A host cut off the network: the harness itself, then a deployment across the cut.

The host (agent, router, instances) runs in its own network namespace; the server
listens on the namespace's gateway address in the root namespace.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.demo.sample import write_sample_app
from tests.helpers import ServerProcess, commit, free_port, plain_http, wait_for
from tests.netns import NamespacedAgent, NetNamespace, ServerOnAddress, netns_available

pytestmark = pytest.mark.slow


@pytest.fixture
def ns() -> Iterator[NetNamespace]:
    if reason := netns_available():
        pytest.skip(reason)
    with NetNamespace() as namespace:
        yield namespace


@pytest.fixture
def gateway_server(ns: NetNamespace, tmp_path: Path) -> Iterator[ServerOnAddress]:
    """The server in the root namespace, on the one address the host can reach."""
    server = ServerOnAddress(tmp_path / "data", ns.gateway_address).start()
    try:
        yield server
    finally:
        server.stop()
        server.http.close()


def _ip_show(*what: str) -> str:
    return subprocess.run(["ip", *what], capture_output=True, text=True, check=True).stdout


def _left_behind(ns: NetNamespace) -> list[str]:
    found = []
    if ns.name in _ip_show("netns", "list"):
        found.append(f"namespace {ns.name}")
    if ns.veth in _ip_show("-o", "link", "show"):
        found.append(f"veth {ns.veth}")
    if ns.subnet in _ip_show("route", "show"):
        found.append(f"route {ns.subnet}")
    return found


def _reachable(url: str) -> bool:
    try:
        return plain_http.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_harness_cuts_and_restores_a_host() -> None:
    if reason := netns_available():
        pytest.skip(reason)
    port = free_port()
    with NetNamespace() as ns:
        assert ns.name in _ip_show("netns", "list")
        url = f"http://{ns.host_address}:{port}/"
        web = ns.popen(
            [sys.executable, "-m", "http.server", "--bind", ns.host_address, str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _reachable(url), timeout=10)
        assert web.pid in ns.pids()
        assert "Directory listing" in ns.fetch(url)  # and from inside
        listener = socket.create_server((ns.gateway_address, 0))  # the root side, for the way out
        try:
            ns.cut()
            started = time.monotonic()
            with pytest.raises(httpx.TransportError):
                httpx.get(url, timeout=1)  # in: refused at once with "no route to host"
            knock = (
                "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1)"
            )
            out = ns.run(
                [sys.executable, "-c", knock, ns.gateway_address, str(listener.getsockname()[1])],
                capture_output=True,
                text=True,
            )
            assert out.returncode != 0 and "timed out" in out.stderr  # out: silence
            assert time.monotonic() - started < 5

            ns.restore()
            assert _reachable(url)
            assert "Directory listing" in ns.fetch(url)
            knocked = ns.run(
                [sys.executable, "-c", knock, ns.gateway_address, str(listener.getsockname()[1])]
            )
            assert knocked.returncode == 0
        finally:
            listener.close()
    # leaving the block ended the server inside and removed every trace
    assert web.wait(timeout=10) != 0
    assert _left_behind(ns) == []


def test_close_after_a_failure_leaves_nothing() -> None:
    if reason := netns_available():
        pytest.skip(reason)
    with pytest.raises(RuntimeError), NetNamespace() as ns:
        sleeper = ns.popen(["sleep", "600"])
        ns.cut()
        raise RuntimeError("the test failed mid-cut")
    assert sleeper.wait(timeout=10) != 0
    assert _left_behind(ns) == []
    ns.close()  # idempotent


def _build(server: ServerProcess, repo: Path, label: str) -> str:
    if label != "v1":
        commit(repo, {"VERSION": label})
    run = server.wait_run(server.post("/api/apps/sample/runs", {})["id"])
    assert run["state"] == "succeeded", run
    return str(run["release"])


def _release(body: str) -> str:
    return str(json.loads(body)["release"])


def test_host_cut_off_mid_deployment_keeps_serving_then_reconverges(
    ns: NetNamespace, gateway_server: ServerOnAddress, tmp_path: Path
) -> None:
    server = gateway_server
    port = free_port()
    repo = tmp_path / "sample"
    write_sample_app(repo, "sample", port=port)
    server.add_app("sample", repo)
    v1 = _build(server, repo, "v1")
    v2 = _build(server, repo, "v2")
    url = f"http://{ns.host_address}:{port}/"
    agent = NamespacedAgent(server, "web-1", tmp_path / "agent", netns=ns)

    def host() -> Any:
        return server.get("/api/hosts/web-1")

    try:
        agent.start()
        agent.set("sample", {v1: 100})
        agent.wait_routed("sample", {v1: 100})
        assert _release(httpx.get(url, timeout=5).text) == v1  # from the root namespace

        ns.cut()
        generation = agent.set("sample", {v2: 100})["generation"]  # the host cannot see it
        offline = wait_for(
            lambda: (h := host()) and not h["online"] and h, timeout=40, interval=0.5
        )
        assert offline["applied_generation"] < generation
        # cut off, the host goes on serving what it had to the clients on its side
        for _ in range(3):
            assert _release(ns.fetch(url)) == v1
        assert agent.proc is not None and agent.proc.poll() is None
        assert not (agent.data / "sample" / "releases" / v2).exists()

        ns.restore()
        agent.wait_routed("sample", {v2: 100}, timeout=60)  # by itself: nobody asks it again

        def converged() -> bool:
            h = host()
            return bool(
                h["online"]
                and h["observed"]["converged"]
                and h["applied_generation"] == h["generation"] == generation
            )

        wait_for(converged, timeout=30, interval=0.2)
        assert _release(httpx.get(url, timeout=5).text) == v2
        assert _release(ns.fetch(url)) == v2
    finally:
        agent.stop_everything()
    wait_for(lambda: ns.pids() == [], timeout=10)  # agent, router and instances all ended


ROLLING_ENVIRONMENTS = """
environments:
  production:
    hosts: [web-1, web-2, web-3]
    strategy: rolling
    batch: 1
    verify:
      - http: GET /healthz
"""


@pytest.mark.timeout(300)
def test_host_cut_off_during_a_rolling_deploy_fails_it_and_rejoins_on_the_old_release(
    ns: NetNamespace, tmp_path: Path
) -> None:
    """Documented behaviour: a host unreachable for 15 s (then a grace, 20 s by default,
    CONVEYOR_OFFLINE_GRACE) fails the rolling deployment; every touched host goes back to
    the previous release, and the cut-off one returns to it when its link comes back."""
    from tests.fleet import Fleet, LoadGenerator

    server = ServerOnAddress(
        tmp_path / "data", ns.gateway_address, env={"CONVEYOR_OFFLINE_GRACE": "3"}
    ).start()
    fleet = Fleet(server, tmp_path, {"web-1": "127.0.0.16", "web-3": "127.0.0.17"})
    fleet.agents["web-2"] = NamespacedAgent(server, "web-2", tmp_path / "web-2", netns=ns)
    fleet.agents = dict(sorted(fleet.agents.items()))
    ended = ("succeeded", "failed")

    def deploy(label: str) -> Any:
        fleet.commit(label, ROLLING_ENVIRONMENTS)
        run = server.wait_run(server.post("/api/apps/sample/runs", {})["id"])
        assert run["state"] == "succeeded", run
        return wait_for(
            lambda: next(
                (d for d in server.get("/api/deployments?app=sample") if d["run"] == run["id"]),
                None,
            ),
            timeout=30,
        )

    def finished(deployment: int) -> Any:
        d = server.get(f"/api/deployments/{deployment}")
        return d if d["state"] in ended else None

    try:
        fleet.start()
        first = deploy("v1")
        v1 = wait_for(lambda: finished(first["id"]), timeout=90)
        assert v1["state"] == "succeeded", v1
        with LoadGenerator(fleet.urls("web-1", "web-3"), clients=6, rate=25) as load:
            second = deploy("v2")
            ns.cut()  # web-2, second in line, will never hear of v2
            record = wait_for(lambda: finished(second["id"]), timeout=120, interval=0.5)
            assert record["state"] == "failed", record
            assert "web-2" in record["reason"] and "connection" in record["reason"], record
            rollback = record["steps"][-1]
            assert rollback["kind"] == "rollback" and set(rollback["hosts"]) == {"web-1", "web-2"}
            assert fleet.routed("web-1") == {v1["release"]: 100}
            assert fleet.routed("web-3") == {v1["release"]: 100}  # never touched

            ns.restore()

            def rejoined() -> bool:
                h = server.get("/api/hosts/web-2")
                return bool(
                    h["online"]
                    and h["observed"]["converged"]
                    and h["applied_generation"] == h["generation"]
                )

            wait_for(rejoined, timeout=60, interval=0.5)
        assert fleet.routed("web-2") == {v1["release"]: 100}
        assert _release(ns.fetch(fleet.url("web-2"))) == v1["release"]
        assert load.result.failures == 0, (load.result.errors[:5], load.result.statuses)
    finally:
        fleet.stop_everything()
        server.stop()
        server.http.close()
