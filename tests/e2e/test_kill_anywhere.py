"""Kill-anywhere: SIGKILL the server after each persisted step of a canary deployment in turn.

The server is started with CONVEYOR_CRASH_AFTER_STEPS=k, which makes it kill
itself right after its k-th persisted deployment change; it is then started
again without it. Every time, every host must end on one release, the record
must say which, and the load generator must see no failed request.

The crash points are shared out between two fleets that run side by side (the
odd ones and the even ones), each with its own server and hosts
(tests/conftest.py's SPREAD_FILES lets xdist run them on two workers).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.deploy.orchestrator import CRASH_ENV
from tests.fleet import Fleet, LoadGenerator, running_fleet
from tests.helpers import ServerProcess, wait_for

pytestmark = pytest.mark.slow

HOSTS = {
    1: {"web-1": "127.0.0.31", "web-2": "127.0.0.32"},
    2: {"web-1": "127.0.0.33", "web-2": "127.0.0.34"},
}
ENVIRONMENTS = """
environments:
  production:
    hosts: [web-1, web-2]
    strategy: canary
    steps: [50, 100]
    step_pause: 1s
    analysis: {error_rate: 5%, min_requests: 10}
    verify:
      - http: GET /healthz
"""
ENDED = ("succeeded", "failed", "cancelled", "superseded")


@pytest.fixture
def fleet(server: ServerProcess, tmp_path: Path, first: int) -> Iterator[Fleet]:
    with running_fleet(server, tmp_path, HOSTS[first]) as f:
        yield f


def build(fleet: Fleet, label: str) -> str:
    fleet.commit(label, ENVIRONMENTS)
    run = fleet.server.wait_run(fleet.server.post("/api/apps/sample/runs", {})["id"])
    assert run["state"] == "succeeded", run
    wait_for(lambda: ended(fleet.server, None), timeout=60)
    return str(run["release"])


def ended(server: ServerProcess, deployment: int | None) -> Any:
    try:
        if deployment is None:
            return all(d["state"] in ENDED for d in server.get("/api/deployments?app=sample"))
        d = server.get(f"/api/deployments/{deployment}")
    except httpx.TransportError:  # the server is killing itself right now
        return None
    return d if d["state"] in ENDED else None


def consistent(fleet: Fleet, record: dict[str, Any]) -> str:
    """Every host routes all traffic to one release, the same everywhere; returns it."""
    serving = set()
    for host in fleet.agents:
        routed = wait_for(
            lambda h=host: (
                (w := fleet.routed(h))
                and len(w) == 1
                and fleet.agents[h].observed()["converged"]
                and w
            ),
            timeout=60,
        )
        assert list(routed.values()) == [100], (host, routed)
        serving |= set(routed)
    assert len(serving) == 1, serving
    expected = record["release"] if record["state"] == "succeeded" else record["previous_release"]
    assert serving == {expected}, (serving, record["state"], record["reason"])
    return serving.pop()


def deploy_crashing_after(fleet: Fleet, target: str, k: int) -> tuple[bool, dict[str, Any]]:
    """Deploy `target` with a server that kills itself after its k-th persisted change,
    start it again if it died, and wait for the deployment to end: (died, its record)."""
    server = fleet.server
    server.stop()
    server.extra_env = {CRASH_ENV: str(k)}
    server.start()
    try:
        deployment: int | None = int(
            server.post("/api/apps/sample/environments/production/deploy", {"release": target})[
                "id"
            ]
        )
    except httpx.TransportError:
        deployment = None  # killed before the answer left: read it after the restart
    proc = server.proc
    assert proc is not None
    wait_for(lambda: proc.poll() is not None or ended(server, deployment), timeout=90)
    died = proc.poll() is not None
    server.extra_env = {}
    if died:
        server.start()
    if deployment is None:
        deployment = int(server.get("/api/deployments?app=sample&limit=1")[0]["id"])
    record = wait_for(lambda: ended(server, deployment), timeout=120)
    return died, record


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "first",
    [
        pytest.param(1, id="odd"),
        pytest.param(2, id="even"),
    ],
)
def test_the_server_killed_after_each_persisted_step_ends_consistent(
    fleet: Fleet, first: int
) -> None:
    v1 = build(fleet, "v1")
    outcomes = []
    with LoadGenerator(fleet.urls(), clients=6, max_seconds=900, rate=25) as load:
        v2 = build(fleet, "v2")  # under load: the canary's analysis needs traffic
        serving = consistent(fleet, {"state": "succeeded", "release": v2})
        k = first
        while True:
            target = v1 if serving == v2 else v2
            died, record = deploy_crashing_after(fleet, target, k)
            serving = consistent(fleet, record)
            outcomes.append((k, died, record["state"], [s["state"] for s in record["steps"]]))
            if not died:
                break  # k went past the last persisted step: the deployment ran through
            k += 2
    for outcome in outcomes:
        print(outcome)
    # every other persisted step of the canary was a crash point: the server died at 4 or
    # more of them in each half, so at 8 or more between the two (as many as in one run)
    assert sum(died for _, died, _, _ in outcomes) >= 4, outcomes
    # the load never stopped, so every canary step could be judged and the deployment
    # ran through wherever the server died
    assert all(state == "succeeded" for _, _, state, _ in outcomes), outcomes
    result = load.result
    assert result.sent > 500
    assert result.failures == 0, (result.errors[:5], result.statuses)
