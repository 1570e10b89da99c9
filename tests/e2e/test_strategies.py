"""Each strategy on four hosts under load: good deploys lose nothing, bad ones leave the old.

Real server, four agents with their routers on 127.0.0.21-24, the sample app; a
load generator spreads keep-alive clients over every host's router throughout.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fleet import Fleet, LoadGenerator, running_fleet
from tests.helpers import ServerProcess, wait_for

# several deployments each: generous on a starved machine, still a hang detector
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

HOSTS = {f"web-{i}": f"127.0.0.{20 + i}" for i in range(1, 5)}
ENDED = ("succeeded", "failed", "cancelled", "superseded")


def environments(strategy: str) -> str:
    return "\nenvironments:\n  production:\n    hosts: [web-1, web-2, web-3, web-4]\n" + "".join(
        f"    {line}\n" for line in strategy.strip().splitlines()
    )


ROLLING = """
strategy: rolling
batch: 1
verify:
  - http: GET /
"""
BLUE_GREEN = """
strategy: blue-green
verify:
  - http: GET /
"""
CANARY = """
strategy: canary
steps: [25, 50, 100]
step_pause: 2s
analysis: {error_rate: 1%, min_requests: 100}
"""
# web-3's instances answer their health check with 500, the others are fine
SICK_ON_WEB_3 = (
    "'case \"$PWD\" in */web-3/*) export HEALTH_STATUS=500;; esac; exec python3 app/server.py'"
)


@pytest.fixture
def fleet(server: ServerProcess, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(server, tmp_path, HOSTS) as f:
        yield f


def release(fleet: Fleet, label: str, strategy: str, **config: Any) -> dict[str, Any]:
    """Push a commit; its run builds a release that deploys to production by itself."""
    fleet.commit(label, environments(strategy), **config)
    run = fleet.server.wait_run(fleet.server.post("/api/apps/sample/runs", {})["id"])
    assert run["state"] == "succeeded", run

    def ended() -> Any:
        found = [
            d for d in fleet.server.get("/api/deployments?app=sample") if d["run"] == run["id"]
        ]
        if found and found[0]["state"] in ENDED:
            return fleet.server.get(f"/api/deployments/{found[0]['id']}")
        return None

    deployment: dict[str, Any] = wait_for(ended, timeout=120, interval=0.3)
    return deployment


def serving_everywhere(fleet: Fleet, release_id: str) -> None:
    for host in HOSTS:
        assert fleet.routed(host) == {release_id: 100}, (host, fleet.agents[host].app("sample"))
        assert fleet.serving(host) == release_id


def test_rolling_moves_one_host_at_a_time_and_a_failure_on_host_3_leaves_all_on_the_old(
    fleet: Fleet,
) -> None:
    v1 = release(fleet, "v1", ROLLING)
    assert v1["state"] == "succeeded", v1
    with LoadGenerator(fleet.urls(), clients=8, rate=25) as load:
        v2 = release(fleet, "v2", ROLLING)
        assert v2["state"] == "succeeded", v2
        batches = [s for s in v2["steps"] if s["kind"] == "batch"]
        assert [s["hosts"] for s in batches] == [[h] for h in HOSTS]
        serving_everywhere(fleet, v2["release"])

        v3 = release(fleet, "v3", ROLLING, start=SICK_ON_WEB_3, health_timeout="3s")
        assert v3["state"] == "failed", v3
        assert "web-3" in v3["reason"], v3["reason"]
        kinds = [(s["kind"], s["state"]) for s in v3["steps"]]
        assert kinds == [
            ("batch", "succeeded"),
            ("batch", "succeeded"),
            ("batch", "failed"),
            ("batch", "skipped"),
            ("verify", "skipped"),
            ("rollback", "succeeded"),
        ], kinds
        assert v3["steps"][-1]["hosts"] == ["web-1", "web-2", "web-3"]
        serving_everywhere(fleet, v2["release"])
    result = load.result
    assert result.sent > 500
    assert result.failures == 0, (result.errors[:5], result.statuses)
    assert v3["release"] in result.releases  # web-1 and web-2 served it before the rollback


def test_blue_green_previews_then_switches_every_host(fleet: Fleet) -> None:
    v1 = release(fleet, "v1", BLUE_GREEN)
    assert v1["state"] == "succeeded", v1
    with LoadGenerator(fleet.urls(), clients=8, rate=25) as load:
        v2 = release(fleet, "v2", BLUE_GREEN)
        # healthy, but every page is a 500: the preview check catches it before users do
        broken = release(fleet, "broken", BLUE_GREEN, error_rate=1.0)
    assert broken["state"] == "failed", broken
    assert [s["kind"] for s in broken["steps"] if s["state"] != "skipped"] == [
        "preview",
        "rollback",
    ]
    assert "expected 200, got 500" in broken["reason"], broken["reason"]
    assert broken["release"] not in load.result.failed_releases
    assert v2["state"] == "succeeded", v2
    assert [s["kind"] for s in v2["steps"]] == ["preview", "switch", "verify"]
    preview = v2["steps"][0]
    assert all(
        {t["release"]: t["weight"] for t in targets} == {v1["release"]: 100, v2["release"]: 0}
        for targets in preview["targets"].values()
    ), preview["targets"]
    # checked through each router's preview route, before any user request reached it
    assert preview["log"].count(f"(preview of {v2['release']}): 200 as expected") == len(HOSTS)
    serving_everywhere(fleet, v2["release"])
    for host in HOSTS:  # the old release stays warm for an instant rollback
        old = fleet.agents[host].release("sample", v1["release"])
        assert old is not None and old["phase"] in ("draining", "warm"), old
    result = load.result
    assert result.failures == 0, (result.errors[:5], result.statuses)
    assert result.releases[v1["release"]] > 0 and result.releases[v2["release"]] > 0


def test_canary_promotes_a_good_release_and_rolls_back_one_answering_5_percent_5xx(
    fleet: Fleet,
) -> None:
    v1 = release(fleet, "v1", CANARY)
    assert v1["state"] == "succeeded", v1
    with LoadGenerator(fleet.urls(), clients=8, rate=25) as load:
        v2 = release(fleet, "v2", CANARY)
        assert v2["state"] == "succeeded", v2
        weights = [s["weight"] for s in v2["steps"] if s["kind"] == "weight"]
        assert weights == [25, 50, 100]
        verdicts = [s["judgement"]["verdict"] for s in v2["steps"] if s["judgement"]]
        assert verdicts == ["pass", "pass"], v2["steps"]
        serving_everywhere(fleet, v2["release"])

        bad = release(fleet, "v3", CANARY, error_rate=0.05)
        assert bad["state"] == "failed", bad
        assert "analysis failed" in bad["reason"] and "ceiling" in bad["reason"], bad["reason"]
        assert bad["steps"][-1]["kind"] == "rollback"
        serving_everywhere(fleet, v2["release"])
    result = load.result
    assert not result.errors, result.errors[:5]
    # the only 5xx came from the canary itself, never from a switch
    assert set(result.failed_releases) <= {bad["release"]}, result.failed_releases
    print(
        f"canary: {result.sent} requests, {sum(result.failed_releases.values())} 5xx "
        f"from {bad['release']} before its rollback"
    )
