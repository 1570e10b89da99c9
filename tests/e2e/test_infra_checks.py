"""Infrastructure checks end to end: a real server, an agent and its router on 127.0.63.21,
and the sample app. A deployment whose host lacks the mount its environment requires is
stopped by the host's agent before any traffic moves, the host and the check named; one
whose checks pass goes on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fleet import Fleet, LoadGenerator, running_fleet
from tests.helpers import ServerProcess, running_server, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

HOSTS = {"web-1": "127.0.63.21"}
MISSING = "/conveyor-test-no-such-mount"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with running_server(tmp_path / "data") as server, running_fleet(server, tmp_path, HOSTS) as f:
        yield f


def environments(checks: str = "") -> str:
    return (
        "\nenvironments:\n  production:\n    hosts: [web-1]\n    strategy: canary\n"
        "    steps: [50, 100]\n    step_pause: 1s\n" + checks
    )


def push(fleet: Fleet, label: str, checks: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    server: ServerProcess = fleet.server
    fleet.commit(label, environments(checks))
    run = server.wait_run(server.post("/api/apps/sample/runs", {})["id"], timeout=120)
    assert run["state"] == "succeeded", run

    def ended() -> Any:
        for d in server.get("/api/deployments?app=sample&environment=production"):
            if d["run"] == run["id"] and d["state"] not in ("queued", "waiting", "running"):
                return server.get(f"/api/deployments/{d['id']}")
        return None

    return run, wait_for(ended, timeout=180, interval=0.3)


def test_a_missing_mount_stops_the_deployment_before_any_traffic_moves(fleet: Fleet) -> None:
    server = fleet.server
    v1, first = push(fleet, "v1")
    assert first["state"] == "succeeded", first

    checks = f"    checks:\n      - mount: {MISSING}\n      - disk: {{path: /, min_free: 1%}}\n"
    with LoadGenerator(fleet.urls(), clients=2, rate=25) as load:
        load.wait_requests(20, timeout=60)
        v2, stopped = push(fleet, "v2", checks)
        load.wait_requests(20, timeout=60)
    assert stopped["state"] == "failed", stopped
    reason = stopped["reason"]
    assert "web-1" in reason and f"mount {MISSING}" in reason, reason
    assert "does not exist" in reason and "nothing changed" in reason, reason
    first_step, *rest = stopped["steps"]
    assert first_step["kind"] == "checks" and first_step["state"] == "failed", first_step
    assert all(s["state"] == "skipped" for s in rest), rest
    assert f"web-1: mount {MISSING}: FAILED" in first_step["log"], first_step["log"]
    assert "web-1: disk / (at least 1% free): ok" in first_step["log"], first_step["log"]
    # no traffic moved: every answer came from v1, and v2 was never installed on the host
    assert set(load.result.releases) == {v1["release"]}, load.result.releases
    assert load.result.failures == 0, load.result.errors[:5]
    assert fleet.serving("web-1") == v1["release"]
    app = fleet.agents["web-1"].app("sample") or {}
    assert v2["release"] not in {r["release"] for r in app.get("releases", [])}, app
    # the request was taken back: the host's desired state asks for no check any more
    assert server.get("/api/hosts/web-1/desired")["checks"] == []

    shown = server.cli("history", "sample", "production")
    assert "web-1" in " ".join(shown.stdout.split()), shown.stdout

    passing = (
        "    checks:\n      - mount: /\n      - disk: {path: /, min_free: 1%}\n"
        f"      - tcp: {server.host}:{server.port}\n      - command: test -d . && echo fine\n"
    )
    v3, went = push(fleet, "v3", passing)
    assert went["state"] == "succeeded", went
    log = went["steps"][0]["log"]
    assert (
        went["steps"][0]["kind"] == "checks"
        and "web-1: command test -d . && echo fine: ok: fine" in log
    ), log
    assert fleet.serving("web-1") == v3["release"]
