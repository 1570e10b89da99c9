"""`announce: [before, after]` end to end: a real server, an agent and its router on
127.0.63.11, the sample app under paced load, and a local json:// endpoint
(tests/notify/receivers.py) receiving what the team is told before and after."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fleet import Fleet, LoadGenerator, running_fleet
from tests.helpers import ServerProcess, running_server, wait_for
from tests.notify.receivers import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

HOSTS = {"web-1": "127.0.63.11"}


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with running_server(tmp_path / "data") as server, running_fleet(server, tmp_path, HOSTS) as f:
        yield f


def environments(url: str) -> str:
    return (
        "\nenvironments:\n"
        "  production:\n"
        "    hosts: [web-1]\n"
        "    strategy: canary\n"
        "    steps: [50, 100]\n"
        "    step_pause: 2s\n"
        "    announce: [before, after]\n"
        "notify:\n"
        f"  - url: {url}\n"
        "    on: [failure, announce]\n"
    )


def deployed(server: ServerProcess, run: int) -> Any:
    def ended() -> Any:
        for d in server.get("/api/deployments?app=sample&environment=production"):
            if d["run"] == run and d["state"] not in ("queued", "waiting", "running"):
                return server.get(f"/api/deployments/{d['id']}")
        return None

    return wait_for(ended, timeout=180, interval=0.3)


def push(fleet: Fleet, label: str, url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    fleet.commit(label, environments(url))
    run = fleet.server.wait_run(fleet.server.post("/api/apps/sample/runs", {})["id"], timeout=120)
    assert run["state"] == "succeeded", run
    d = deployed(fleet.server, run["id"])
    assert d["state"] == "succeeded", d
    return run, d


def announcements(server: ServerProcess, deployment: int, count: int) -> list[dict[str, Any]]:
    def found() -> Any:
        rows = [
            n
            for n in server.get("/api/notifications?app=sample&limit=100")
            if n["deployment"] == deployment and n["event"] == "announce"
        ]
        return len(rows) >= count and all(n["state"] == "sent" for n in rows) and rows

    rows: list[dict[str, Any]] = wait_for(found, timeout=60, interval=0.3)
    return sorted(rows, key=lambda n: n["id"])


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_the_team_hears_before_traffic_moves_and_how_the_metrics_look_after(
    fleet: Fleet,
) -> None:
    server = fleet.server
    with Receiver() as receiver:
        url = receiver.url("/team")
        v1, d1 = push(fleet, "v1", url)
        first_before, _ = announcements(server, d1["id"], 2)
        assert "the first release of this environment" in first_before["body"]
        assert "there is no earlier release here to roll back to" in first_before["body"]

        with LoadGenerator(fleet.urls(), clients=2, rate=25) as load:
            load.wait_requests(50, timeout=60)
            v2, d2 = push(fleet, "v2", url)
            load.wait_requests(50, timeout=60)
        assert load.result.failures == 0, load.result.errors[:5]
        before, after = announcements(server, d2["id"], 2)  # delivered while it listens

    # queued with the start, before the first step moved any traffic
    first_step = d2["steps"][0]
    assert when(before["created_at"]) <= when(first_step["started_at"]), (before, first_step)
    body = before["body"]
    assert before["title"] == f"sample production: deploying {v2['release']} now"
    assert f"1 since {v1['release']}:" in body, body
    assert "Where: app sample, environment production, hosts web-1" in body
    assert "Strategy: canary: 50% → 100% of the traffic, 2s a step" in body
    assert "Expected: about " in body and "the last 1 deployment(s) here took" in body
    assert f"Link: {server.url}/deployments/{d2['id']}" in body
    assert f"`conveyor rollback sample production` puts {v1['release']} back" in body

    text = after["body"]
    assert after["title"] == f"sample production: {v2['release']} deployed, how it looks"
    rate = next(line for line in text.splitlines() if line.startswith("Error rate: "))
    assert f"0.00% ({v1['release']}, " in rate and f"0.00% ({v2['release']}, " in rate, text
    p95 = next(line for line in text.splitlines() if line.startswith("p95: "))
    assert " ms (" in p95 and "before →" in p95, text
    assert "Measured: by the router source on web-1" in text

    # each sent once, as Apprise's `info` (the courier sends rows side by side: any order)
    got = [r for r in receiver.received if r["path"] == "/team" and r.get("type") == "info"]
    first_after = announcements(server, d1["id"], 2)[1]
    assert sorted(r["title"] for r in got) == sorted(
        n["title"] for n in (first_before, first_after, before, after)
    )
