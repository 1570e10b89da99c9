"""The promotion chain for real: a commit goes test → build → staging → verify → production."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fleet import Fleet, LoadGenerator, running_fleet
from tests.helpers import ServerProcess, wait_for

# several deployments each: generous on a starved machine, still a hang detector
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

HOSTS = {"stage-1": "127.0.0.11", "web-1": "127.0.0.12", "web-2": "127.0.0.13"}

ENVIRONMENTS = """
environments:
  staging:
    hosts: [stage-1]
    verify:
      - http: GET /healthz
      - run: python3 -c "import os, urllib.request as u; u.urlopen(os.environ['CONVEYOR_URL'])"
  production:
    hosts: [web-1, web-2]
    strategy: canary
    steps: [50, 100]
    step_pause: 2s
    analysis: {{error_rate: 5%, min_requests: 20, advance: early}}
    verify:
      - http: GET /
{approval}
"""


@pytest.fixture
def fleet(server: ServerProcess, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(server, tmp_path, HOSTS) as f:
        yield f


def deployments(server: ServerProcess, run: int) -> list[dict[str, Any]]:
    return [d for d in server.get("/api/deployments?app=sample") if d["run"] == run]


def wait_deployed(server: ServerProcess, run: int, env: str, timeout: float = 90) -> Any:
    def ended() -> Any:
        found = [d for d in deployments(server, run) if d["environment"] == env]
        if found and found[0]["state"] not in (
            "queued",
            "waiting",
            "running",
            "rolling_back",
            "aborting",
        ):
            return server.get(f"/api/deployments/{found[0]['id']}")
        return None

    return wait_for(ended, timeout=timeout, interval=0.3)


def push(fleet: Fleet, label: str, approval: str = "") -> int:
    fleet.commit(label, ENVIRONMENTS.format(approval=approval))
    run = fleet.server.post("/api/apps/sample/runs", {})
    return int(run["id"])


def test_a_commit_reaches_production_through_staging_with_no_human_step(fleet: Fleet) -> None:
    server = fleet.server
    first = push(fleet, "v1")
    assert wait_deployed(server, first, "production")["state"] == "succeeded"
    v1 = server.get(f"/api/runs/{first}")["release"]
    assert {fleet.serving(h) for h in HOSTS} == {v1}

    second = push(fleet, "v2")
    with LoadGenerator(fleet.urls("web-1", "web-2"), clients=8, rate=25) as load:
        staging = wait_deployed(server, second, "staging")
        production = wait_deployed(server, second, "production")
    assert staging["state"] == "succeeded", staging
    assert production["state"] == "succeeded", production
    v2 = production["release"]
    kinds = [s["kind"] for s in production["steps"]]
    assert kinds == ["preview", "weight", "weight", "verify"], kinds
    assert production["steps"][1]["judgement"]["verdict"] == "pass"
    assert {fleet.serving(h) for h in HOSTS} == {v2}
    assert load.result.failures == 0, (load.result.errors[:5], load.result.statuses)
    assert load.result.releases[v1] > 0 and load.result.releases[v2] > 0


def test_approval_required_waits_until_approved(fleet: Fleet) -> None:
    server = fleet.server
    run = push(fleet, "v1", approval="    approval: required")
    staging = wait_deployed(server, run, "staging")
    assert staging["state"] == "succeeded"

    def waiting() -> Any:
        found = [d for d in deployments(server, run) if d["environment"] == "production"]
        return found and found[0]["state"] == "waiting" and found[0]

    held = wait_for(waiting, timeout=30)
    assert f"conveyor approve {run}" in held["reason"]
    assert fleet.agents["web-1"].app("sample") is None  # nothing moved on production
    approved = server.post(f"/api/runs/{run}/approve")
    assert approved[0]["approved_by"]
    production = wait_deployed(server, run, "production")
    assert production["state"] == "succeeded", production
    assert production["approved_by"] == approved[0]["approved_by"]


MIGRATING = """
hooks:
  migrate: ./bin/migrate
environments:
  production:
    hosts: [web-1, web-2]
    strategy: rolling
"""


def test_migrate_runs_once_on_the_first_host_before_traffic_and_its_failure_stops_all(
    fleet: Fleet, tmp_path: Path
) -> None:
    from tests.helpers import commit

    server = fleet.server
    ledger = tmp_path / "migrations.log"

    def push_migrating(label: str, script: str) -> Any:
        commit(fleet.repo, {"bin/migrate": script}, executable=("bin/migrate",))
        fleet.commit(label, MIGRATING)
        run = server.wait_run(server.post("/api/apps/sample/runs", {})["id"])
        assert run["state"] == "succeeded", run
        return wait_deployed(server, run["id"], "production")

    good = f'#!/bin/sh\necho "$CONVEYOR_MIGRATION $PWD" >> {ledger}\necho migrated\n'
    v1 = push_migrating("v1", good)
    assert v1["state"] == "succeeded", v1
    with LoadGenerator(fleet.urls("web-1", "web-2"), clients=6, rate=25) as load:
        v2 = push_migrating("v2", good)
        assert v2["state"] == "succeeded", v2
        assert [s["kind"] for s in v2["steps"]][:2] == ["migrate", "batch"]
        lines = ledger.read_text().splitlines()
        # once per deployment, on the first host only
        assert [line.split()[0] for line in lines] == [
            f"deployment-{v1['id']}",
            f"deployment-{v2['id']}",
        ]
        assert "/web-1/" in lines[1] and v2["release"] in lines[1]

        bad = "#!/bin/sh\necho 'column shop.price already exists' >&2\nexit 4\n"
        v3 = push_migrating("v3", bad)
    assert v3["state"] == "failed", v3
    assert "hooks.migrate failed on web-1 (exit 4)" in v3["reason"], v3["reason"]
    assert "column shop.price already exists" in v3["reason"]
    assert [s["kind"] for s in v3["steps"] if s["state"] != "skipped"] == ["migrate", "rollback"]
    assert {fleet.serving(h) for h in ("web-1", "web-2")} == {v2["release"]}
    assert v3["release"] not in load.result.releases  # no traffic ever moved to it
    assert load.result.failures == 0, (load.result.errors[:5], load.result.statuses)


SLOW_CANARY = """
environments:
  production:
    hosts: [web-1, web-2]
    strategy: canary
    steps: [50, 100]
    step_pause: 5m
"""


def test_abort_and_rollback_in_the_middle_of_a_canary_send_traffic_back_at_once(
    fleet: Fleet,
) -> None:
    import time

    server = fleet.server

    def push_slow(label: str) -> Any:
        fleet.commit(label, SLOW_CANARY)
        run = server.wait_run(server.post("/api/apps/sample/runs", {})["id"])
        assert run["state"] == "succeeded", run
        return run

    def halfway(run: Any) -> Any:
        """Until both hosts serve the canary at 50% (the step's 5-minute pause has begun)."""
        for host in ("web-1", "web-2"):
            wait_for(lambda h=host: sorted(fleet.routed(h).values()) == [50, 50], timeout=60)
        return deployments(server, run["id"])[0]

    v1 = push_slow("v1")
    assert wait_deployed(server, v1["id"], "production")["state"] == "succeeded"
    with LoadGenerator(fleet.urls("web-1", "web-2"), clients=6, rate=25) as load:
        v2 = push_slow("v2")
        halfway(v2)
        started = time.monotonic()
        server.post(f"/api/runs/{v2['id']}/abort")
        aborted = wait_deployed(server, v2["id"], "production")
        for host in ("web-1", "web-2"):
            wait_for(lambda h=host: fleet.routed(h) == {v1["release"]: 100}, timeout=30)
        abort_seconds = time.monotonic() - started
        assert aborted["state"] == "cancelled", aborted
        assert aborted["steps"][-1]["kind"] == "rollback"

        v3 = push_slow("v3")
        d3 = halfway(v3)
        started = time.monotonic()
        back = server.post("/api/apps/sample/environments/production/rollback", {})
        assert back["release"] == v1["release"] and back["kind"] == "rollback"

        def rolled_back() -> Any:
            d = server.get(f"/api/deployments/{back['id']}")
            return d if d["state"] in ("succeeded", "failed") else None

        done = wait_for(rolled_back, timeout=60)
        rollback_seconds = time.monotonic() - started
        assert done["state"] == "succeeded", done
        assert server.get(f"/api/deployments/{d3['id']}")["state"] == "cancelled"
    assert {fleet.serving(h) for h in ("web-1", "web-2")} == {v1["release"]}
    assert load.result.failures == 0, (load.result.errors[:5], load.result.statuses)
    print(
        f"abort mid-canary → all traffic on the old release in {abort_seconds:.2f} s; "
        f"rollback mid-canary → done in {rollback_seconds:.2f} s"
    )
