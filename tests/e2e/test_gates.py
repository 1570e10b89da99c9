"""Gates, enforced by the server: tests, earlier environments, and the window (admin force)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fleet import Fleet, running_fleet
from tests.helpers import ServerProcess, commit, wait_for

# several deployments each: generous on a starved machine, still a hang detector
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

HOSTS = {"stage-1": "127.0.0.14", "web-1": "127.0.0.15"}
ACTIVE = ("queued", "waiting", "running", "rolling_back", "aborting")


def closed_window() -> str:
    """A one-minute window two days from now: closed for the whole test."""
    day = (datetime.now(UTC) + timedelta(days=2)).strftime("%a")
    return f"{day} 03:00-03:01 UTC"


ENVIRONMENTS = f"""
environments:
  staging:
    hosts: [stage-1]
    verify:
      - run: test "$(cat VERSION)" != broken
  production:
    hosts: [web-1]
    window: "{closed_window()}"
"""


@pytest.fixture
def fleet(server: ServerProcess, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(server, tmp_path, HOSTS) as f:
        yield f


def push(fleet: Fleet, label: str) -> dict[str, Any]:
    fleet.commit(label, ENVIRONMENTS)
    run: dict[str, Any] = fleet.server.wait_run(
        fleet.server.post("/api/apps/sample/runs", {})["id"]
    )
    return run


def deployment_of(server: ServerProcess, run: int, env: str, states: tuple[str, ...]) -> Any:
    def found() -> Any:
        for d in server.get(f"/api/deployments?app=sample&environment={env}"):
            if d["run"] == run and d["state"] in states:
                return server.get(f"/api/deployments/{d['id']}")
        return None

    return wait_for(found, timeout=90, interval=0.3)


def token(server: ServerProcess, role: str) -> httpx.Client:
    secret = server.post("/api/tokens", {"name": f"a {role}", "role": role})["token"]
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=30
    )


def test_window_holds_production_and_only_an_admin_with_a_reason_forces_it(fleet: Fleet) -> None:
    server = fleet.server
    run = push(fleet, "v1")
    assert run["state"] == "succeeded", run
    staged = deployment_of(server, run["id"], "staging", ("succeeded", "failed"))
    assert staged["state"] == "succeeded", staged
    held = deployment_of(server, run["id"], "production", ("waiting",))
    assert "deployment window" in held["reason"], held
    assert fleet.agents["web-1"].app("sample") is None  # nothing moved

    path = "/api/apps/sample/environments/production/deploy"
    body = {"release": run["release"], "force": True, "reason": "hotfix for the outage"}
    with token(server, "deployer") as deployer:
        refused = deployer.post(path, json=body)
        assert refused.status_code == 403, refused.text
        assert "admin" in refused.json()["detail"]
    no_reason = server.http.post(path, json={"release": run["release"], "force": True})
    assert no_reason.status_code == 422, no_reason.text
    assert "reason" in no_reason.json()["detail"]

    forced = server.http.post(path, json=body)
    assert forced.status_code == 201, forced.text
    done = deployment_of(server, run["id"], "production", ("succeeded", "failed"))
    assert done["state"] == "succeeded", done
    assert done["forced_by"] and done["force_reason"] == "hotfix for the outage"
    assert fleet.serving("web-1") == run["release"]
    superseded = server.get(f"/api/deployments/{held['id']}")
    assert superseded["state"] == "superseded", superseded


def test_production_refuses_what_failed_its_tests_or_did_not_pass_staging(fleet: Fleet) -> None:
    server = fleet.server
    good = push(fleet, "v1")
    deployment_of(server, good["id"], "staging", ("succeeded",))
    path = "/api/apps/sample/environments/production/deploy"

    # staging's verify fails for this release: staging goes back, the chain stops
    broken = push(fleet, "broken")
    assert broken["state"] == "succeeded", broken
    staged = deployment_of(server, broken["id"], "staging", ("failed",))
    assert "verify failed" in staged["reason"], staged
    assert fleet.serving("stage-1") == good["release"]
    refused = server.http.post(path, json={"release": broken["release"]})
    assert refused.status_code == 409, refused.text
    assert "has not passed staging" in refused.json()["detail"]

    # a commit whose tests fail has no release; asking for it by commit says why
    sha = commit(
        fleet.repo,
        {
            "tests/test_broken.py": (
                "import unittest\n\n\nclass Broken(unittest.TestCase):\n"
                "    def test_it(self):\n        self.fail('broken on purpose')\n"
            )
        },
    )
    failed = fleet.server.wait_run(fleet.server.post("/api/apps/sample/runs", {})["id"])
    assert failed["state"] == "failed", failed
    refused = server.http.post(path, json={"release": sha[:10]})
    assert refused.status_code == 409, refused.text
    assert "has no release" in refused.json()["detail"]
    assert "unit tests" in refused.json()["detail"]

    # nothing reached production
    assert fleet.agents["web-1"].app("sample") is None
    active = [d for d in server.get("/api/deployments?app=sample") if d["state"] in ACTIVE]
    assert all(d["environment"] == "production" and d["state"] == "waiting" for d in active)


def test_hosts_from_an_inventory_command_and_a_missing_host_fails_before_anything_changes(
    fleet: Fleet,
) -> None:
    server = fleet.server
    inventory = """
environments:
  production:
    hosts: {command: ./inventory.sh}
"""
    script = "#!/bin/sh\ncat hosts.txt\n"
    commit(
        fleet.repo,
        {"inventory.sh": script, "hosts.txt": "stage-1\nweb-1\n"},
        executable=("inventory.sh",),
    )
    fleet.commit("v1", inventory)
    run = server.wait_run(server.post("/api/apps/sample/runs", {})["id"])
    done = deployment_of(server, run["id"], "production", ("succeeded", "failed"))
    assert done["state"] == "succeeded", done
    assert done["hosts"] == ["stage-1", "web-1"]
    assert {fleet.serving(h) for h in HOSTS} == {run["release"]}

    # the inventory now names a host that was never registered: refused, nothing moves
    commit(fleet.repo, {"hosts.txt": "stage-1\nweb-1\nweb-9\n"})
    fleet.commit("v2", inventory)
    run2 = server.wait_run(server.post("/api/apps/sample/runs", {})["id"])
    refused = deployment_of(server, run2["id"], "production", ("failed",))
    assert "web-9" in refused["reason"] and "nothing changed" in refused["reason"], refused
    assert refused["steps"] == []
    assert {fleet.serving(h) for h in HOSTS} == {run["release"]}
