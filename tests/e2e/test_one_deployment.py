"""One deployment per environment, held by the database, under 50 concurrent requests;
a retried request with an Idempotency-Key changes nothing twice."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fleet import Fleet, running_fleet
from tests.helpers import ServerProcess, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ACTIVE = ("queued", "waiting", "running", "rolling_back", "aborting")
DEPLOY = "/api/apps/sample/environments/production/deploy"
# an instance that never turns healthy: its deployment stays running for minutes
PRODUCTION = """
environments:
  production:
    hosts: [web-1]
"""
CLIENTS = 50
ANSWER_WITHIN = 5.0  # seconds, each request: the bound (generous for a 2-core machine)


@pytest.fixture
def fleet(server: ServerProcess, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(server, tmp_path, {"web-1": "127.0.3.1"}) as f:
        yield f


def deployments(server: ServerProcess) -> list[Any]:
    found: list[Any] = server.get(
        "/api/deployments", params={"app": "sample", "environment": "production", "limit": 500}
    )
    return found


def active(server: ServerProcess) -> list[Any]:
    return [d for d in deployments(server) if d["state"] in ACTIVE]


def in_state(server: ServerProcess, deployment: int, *states: str) -> Any:
    def reached() -> Any:
        d = server.get(f"/api/deployments/{deployment}")
        return d if d["state"] in states else None

    return wait_for(reached, timeout=60, interval=0.2)


def post(
    server: ServerProcess, path: str, body: Any, key: str | None = None
) -> tuple[int, Any, dict[str, str], float]:
    """One POST on its own connection: status, JSON body, headers, seconds to the answer."""
    headers = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    started = time.monotonic()
    try:
        conn.request("POST", path, json.dumps(body), headers)
        response = conn.getresponse()
        data = json.loads(response.read())
        return response.status, data, dict(response.getheaders()), time.monotonic() - started
    finally:
        conn.close()


def abort_and_wait(server: ServerProcess, deployment: int) -> None:
    server.post(f"/api/deployments/{deployment}/abort")
    wait_for(lambda: not active(server), timeout=60, interval=0.2)


def test_concurrent_deploys_queue_one_and_the_others_are_told_why(fleet: Fleet) -> None:
    server = fleet.server
    fleet.commit("v1", PRODUCTION, health_status=500, health_timeout="10m")
    run = server.wait_run(server.post("/api/apps/sample/runs", {})["id"])
    assert run["state"] == "succeeded", run
    release = run["release"]
    (pipeline,) = deployments(server)
    in_state(server, pipeline["id"], "running")

    # the same release while it runs: refused, through the CLI too (exit 2, the reason)
    status, body, _, _ = post(server, DEPLOY, {"release": release})
    assert status == 409, body
    assert body["detail"] == (
        f"refused: release {release} is already being deployed to production of sample: "
        f"deployment #{pipeline['id']} (running)"
    )
    cli = server.cli("deploy", "sample", "production", "--release", release)
    assert cli.returncode == 2, cli.stdout + cli.stderr
    assert f"already being deployed to production of sample: deployment #{pipeline['id']}" in (
        cli.stderr
    )
    abort_and_wait(server, pipeline["id"])

    # 50 at once for a free environment: one is queued (and runs), 49 are refused naming it
    answers: list[tuple[int, Any, dict[str, str], float]] = []
    start = threading.Barrier(CLIENTS)

    def client() -> None:
        start.wait()
        answers.append(post(server, DEPLOY, {"release": release}))

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = Counter(status for status, *_ in answers)
    slowest = max(seconds for *_, seconds in answers)
    print(f"{CLIENTS} concurrent deploys: {dict(statuses)}, slowest answer {slowest:.2f} s")
    assert statuses == {201: 1, 409: CLIENTS - 1}, answers
    assert slowest < ANSWER_WITHIN, sorted(seconds for *_, seconds in answers)
    (created,) = [body for status, body, *_ in answers if status == 201]
    for status, body, *_ in answers:
        if status == 409:
            assert body["detail"].startswith("refused: release "), body
            assert f"deployment #{created['id']}" in body["detail"], body

    running = in_state(server, created["id"], "running")
    assert [d["id"] for d in active(server)] == [running["id"]]
    records = deployments(server)
    assert [d["trigger"] for d in records] == ["api", "pipeline"], records
    abort_and_wait(server, created["id"])

    # a retry with the same key gets the first answer and creates nothing
    first = post(server, DEPLOY, {"release": release}, key="deploy-once-1")
    assert first[0] == 201, first
    again = post(server, DEPLOY, {"release": release}, key="deploy-once-1")
    assert (again[0], again[1]) == (first[0], first[1])
    assert again[2].get("idempotent-replayed") == "true" and "idempotent-replayed" not in first[2]
    other = post(
        server, DEPLOY, {"release": release, "force": False, "reason": "x"}, "deploy-once-1"
    )
    assert other[0] == 422, other
    assert "Idempotency-Key 'deploy-once-1' was first sent to POST " in other[1]["detail"]
    assert len(deployments(server)) == 3
    assert [d["id"] for d in active(server)] == [first[1]["id"]]

    # a refusal is an answer too: kept, and replayed once the environment is free again
    refused = post(server, DEPLOY, {"release": release}, key="deploy-once-2")
    assert refused[0] == 409, refused
    abort_and_wait(server, first[1]["id"])
    replayed = post(server, DEPLOY, {"release": release}, key="deploy-once-2")
    assert (replayed[0], replayed[1]) == (refused[0], refused[1])
    assert not active(server)

    # runs: the same key, the same run
    runs = "/api/apps/sample/runs"
    queued = post(server, runs, {}, key="run-once")
    assert queued[0] == 201, queued
    assert post(server, runs, {}, key="run-once")[1]["id"] == queued[1]["id"]
    assert [r["id"] for r in server.get("/api/runs", params={"app": "sample"})] == [
        queued[1]["id"],
        run["id"],
    ]
    too_long = post(server, runs, {}, key="k" * 256)
    assert too_long[0] == 422, too_long
