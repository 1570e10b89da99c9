"""Bad input on a host: each is refused with a clear error and the previous release serving."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_host import World, world_on
from tests.fleet import AgentProcess
from tests.helpers import ServerProcess, free_port, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def world(server: ServerProcess, tmp_path: Path) -> Iterator[World]:
    with world_on("embedded", server, tmp_path, "127.0.0.3") as w:
        yield w


def _failed(agent: AgentProcess, release: str) -> str:
    found = wait_for(
        lambda: (r := agent.release("sample", release)) and r["phase"] == "failed" and r,
        timeout=40,
    )
    return str(found["error"])


def test_tampered_artifact_is_refused(world: World) -> None:
    v1 = world.build("v1")
    v2 = world.build("v2")
    agent = world.agent.start()
    agent.set("sample", {v1: 100})
    agent.wait_routed("sample", {v1: 100})
    # flip bytes of v2's artifact in the server's store: its sha256 no longer matches
    sha = world.server.get(f"/api/releases/{v2}")["sha256"]
    stored = world.server.data / "artifacts" / "sha256" / sha[:2] / f"{sha}.tar.gz"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    agent.set("sample", {v2: 100})
    error = _failed(agent, v2)
    assert "checksum mismatch" in error
    assert world.serving() == v1
    assert not (agent.data / "sample" / "releases" / v2).exists()


def test_public_port_taken_is_a_clear_error(world: World) -> None:
    v1 = world.build("v1")
    busy = free_port("127.0.0.3")
    holder = socket.socket()
    holder.bind(("127.0.0.3", busy))
    holder.listen()
    try:
        v2 = world.build("v2-port", port_override=busy)
        agent = world.agent.start()
        agent.set("sample", {v1: 100})
        agent.wait_routed("sample", {v1: 100})
        agent.set("sample", {v2: 100})
        wait_for(lambda: "in use" in str((agent.app("sample") or {}).get("error")), timeout=30)
        assert world.serving() == v1
    finally:
        holder.close()


def test_wrong_and_revoked_agent_tokens(world: World, tmp_path: Path) -> None:
    server = world.server
    server.post("/api/hosts", {"name": "intruder"})
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor",
            "agent",
            "--server",
            server.url,
            "--name",
            "intruder",
            "--token",
            "cvy_wrong",
            "--data",
            str(tmp_path / "intruder"),
            "--bind",
            "127.0.0.3",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "enrolment refused" in done.stdout + done.stderr

    v1 = world.build("v1")
    agent = world.agent.start()
    agent.set("sample", {v1: 100})
    agent.wait_routed("sample", {v1: 100})
    assert server.http.delete("/api/hosts/web-1").status_code == 200
    credential = (agent.data / "credential.json").read_text()
    token = __import__("json").loads(credential)["agent_token"]
    refused = httpx.get(
        f"{server.url}/api/agent/desired", headers={"Authorization": f"Bearer {token}"}
    )
    assert refused.status_code == 401
    # the host keeps serving what it had: losing the server's trust is not an outage
    wait_for(lambda: "credential refused" in agent.log(), timeout=30)
    assert world.serving() == v1


def test_losing_the_server_keeps_serving_and_reconverges(world: World) -> None:
    v1 = world.build("v1")
    v2 = world.build("v2")
    agent = world.agent.start()
    agent.set("sample", {v1: 100})
    agent.wait_routed("sample", {v1: 100})
    world.server.kill()
    for _ in range(20):
        assert world.serving() == v1
    world.server.start()
    agent.set("sample", {v2: 100})
    agent.wait_routed("sample", {v2: 100})
    assert world.serving() == v2


def test_host_commands_show_what_runs_where(world: World) -> None:
    v1 = world.build("v1")
    added = world.server.cli("host", "add", "web-9")
    assert added.returncode == 0 and "--token cvy_" in added.stdout
    again = world.server.cli("host", "add", "web-9")
    assert again.returncode == 2 and "already exists" in again.stderr
    agent = world.agent.start()
    agent.set("sample", {v1: 100})
    agent.wait_routed("sample", {v1: 100})
    listed = world.server.cli("host", "list")
    assert listed.returncode == 0
    row = next(line for line in listed.stdout.splitlines() if "web-1" in line)
    assert "online" in row and f"{v1} 100% healthy" in row
    as_json = world.server.cli("host", "list", "--json")
    hosts = {h["name"]: h for h in __import__("json").loads(as_json.stdout)}
    assert hosts["web-9"]["state"] == "pending" and hosts["web-1"]["online"]
    removed = world.server.cli("host", "remove", "web-9")
    assert removed.returncode == 0
    assert world.server.get("/api/hosts/web-9")["state"] == "revoked"
    unknown = world.server.cli("host", "remove", "nope")
    assert unknown.returncode == 2 and "unknown host" in unknown.stderr


def test_desired_state_refuses_bad_input_and_changes_nothing(world: World) -> None:
    server = world.server
    v1 = world.build("v1")
    server.post("/api/hosts", {"name": "web-1"})
    ok = server.http.put(
        "/api/hosts/web-1/apps/sample", json={"releases": [{"release": v1, "weight": 100}]}
    )
    assert ok.status_code == 200 and ok.json()["generation"] == 1
    for body, message in (
        ({"releases": [{"release": "abc1234-9", "weight": 100}]}, "unknown release"),
        ({"releases": [{"release": v1, "weight": 0}]}, "weight above 0"),
        ({"releases": [{"release": v1, "weight": 50}, {"release": v1, "weight": 50}]}, "twice"),
        ({"releases": [{"release": v1, "weight": 101}]}, "less than or equal"),
    ):
        r = server.http.put("/api/hosts/web-1/apps/sample", json=body)
        assert r.status_code == 422 and message in r.text, r.text
    assert server.http.put("/api/hosts/nope/apps/sample", json={"releases": []}).status_code == 404
    assert server.http.put("/api/hosts/web-1/apps/nope", json={"releases": []}).status_code == 404
    assert server.get("/api/hosts/web-1")["generation"] == 1  # nothing changed
    desired = server.get("/api/hosts/web-1/desired")
    assert [r["release"] for r in desired["apps"][0]["releases"]] == [v1]


def test_status_shows_release_weight_and_health_per_host(world: World) -> None:
    v1 = world.build("v1")
    v2 = world.build("v2")
    agent = world.agent.start()
    agent.set("sample", {v1: 90, v2: 10})
    agent.wait_routed("sample", {v1: 90, v2: 10})
    status = __import__("json").loads(world.server.cli("status", "sample", "--json").stdout)
    place = status[0]["hosts"][0]
    assert place["host"] == "web-1" and place["online"]
    weights = {r["release"]: (r["weight"], r["phase"]) for r in place["observed"]}
    assert weights == {v1: (90, "healthy"), v2: (10, "healthy")}
    text = world.server.cli("status").stdout
    row = next(line for line in text.splitlines() if "web-1" in line)
    assert "online" in row and "90%" in row


def test_agent_reports_where_its_router_is_reached(world: World) -> None:
    world.agent.start()
    assert world.agent.observed()["address"] == "127.0.0.3"


def test_a_release_withdrawn_before_it_was_healthy_is_stopped_not_kept_warm(world: World) -> None:
    v1 = world.build("v1")
    slow = world.build("slow", start="sleep 5 && python3 app/server.py")
    agent = world.agent.start()
    agent.set("sample", {v1: 100})
    agent.wait_routed("sample", {v1: 100})
    agent.set("sample", {slow: 100})
    wait_for(lambda: (agent.release("sample", slow) or {}).get("phase") == "starting")
    agent.set("sample", {v1: 100})  # changed our mind before its health check passed
    wait_for(lambda: agent.release("sample", slow) is None, timeout=20)
    assert world.serving() == v1
