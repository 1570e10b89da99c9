"""PostgreSQL lost under running servers, during a canary one drives (README: PostgreSQL).

Real processes: a throwaway PostgreSQL cluster of this test's own (it is stopped and
started again, which the worker's shared cluster must not be), two `conveyor server`s
sharing it on 127.0.76.1-2, two hosts on 127.0.76.11-12 (agents given both servers,
embedded routers, the sample app) with paced load on them. During the canary's first
pause PostgreSQL is stopped with `pg_ctl stop -m immediate` (every connection cut, as
a crash would) for longer than a deployment lease (10 s, so that the lease path is
taken too), then started again on the same socket. Meanwhile:

- no request to either server is answered 500: the reads it keeps (status, runs) are
  answered as last read, saying so; those that need the database get 503 `database
  unavailable` with Retry-After; `/healthz` says the database is unavailable;
- the engine's loops neither die nor spin: the outage is logged once, its end once,
  and no loop error or traceback is logged;
- the deployment pauses, then ends as it would have (succeeded), no step started twice,
  no step left running, and the hosts served all along (0 failed requests);
- a run whose step ended while the database was away is retried once from a clean
  checkout when it is back (as after a server crash: the step's end was never recorded).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from testbed.fleet import Fleet, LoadGenerator
from testbed.helpers import ServerProcess, config, make_repo, wait_for
from testbed.postgres import Cluster
from tests.e2e.test_kill_anywhere import ENDED, consistent

pytestmark = [pytest.mark.slow, pytest.mark.postgresql]

SERVERS = ("127.0.76.1", "127.0.76.2")
HOSTS = {"web-1": "127.0.76.11", "web-2": "127.0.76.12"}
DOWN = 12.0  # seconds PostgreSQL stays stopped: longer than a lease (leases.TTL, 10 s)


def environments(step_pause: str) -> str:
    return f"""
environments:
  production:
    hosts: [web-1, web-2]
    strategy: canary
    steps: [50, 100]
    step_pause: {step_pause}
    analysis: {{error_rate: 5%, min_requests: 10}}
    verify:
      - http: GET /healthz
"""


@pytest.fixture
def pg() -> Iterator[Cluster]:
    cluster = Cluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


class Prober:
    """Asks the server for reads and writes all along (a client that retries nothing):
    every answer's status, and the 503s' Retry-After and detail."""

    def __init__(self, server: ServerProcess, deployment: int) -> None:
        self.server = server
        self.paths = [
            "/api/status",
            f"/api/deployments/{deployment}",
            "/api/deployments?app=sample",
            "/api/hosts",
            "/api/runs?app=sample",
            "/api/apps",
        ]
        self.statuses: Counter[int] = Counter()
        self.unavailable: list[tuple[str, str | None, str]] = []  # path, Retry-After, detail
        self.failures: list[str] = []
        self.stale: Counter[str] = Counter()  # answers kept from before the outage
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(
            base_url=self.server.url, headers=dict(self.server.http.headers), timeout=30
        ) as http:
            while not self._stop.wait(0.2):
                for path in self.paths:
                    try:
                        r = http.get(path)
                    except httpx.HTTPError as exc:
                        self.failures.append(f"{path}: {exc!r}")
                        continue
                    self.statuses[r.status_code] += 1
                    if r.status_code == 200 and r.headers.get("x-conveyor-database"):
                        self.stale[path] += 1  # kept from before, its age said
                        assert r.headers["age"].isdigit(), r.headers
                    if r.status_code >= 500:
                        detail = r.text[:300]
                        self.unavailable.append((path, r.headers.get("retry-after"), detail))


def log_entries(server: ServerProcess) -> list[dict[str, Any]]:
    entries = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return entries


@pytest.mark.timeout(420)
def test_postgresql_lost_during_a_canary_pauses_it_and_it_resumes(
    pg: Cluster, tmp_path: Path
) -> None:
    db = pg.url(pg.create_database())
    servers: list[ServerProcess] = []
    fleet = None
    try:
        for i, address in enumerate(SERVERS):
            server = ServerProcess(tmp_path / "data", host=address, args=("--db", db))
            server.log_path = tmp_path / f"server-{i + 1}.log"
            servers.append(server.start())
        fleet = Fleet(servers[0], tmp_path, HOSTS)
        for agent in fleet.agents.values():  # every agent knows both servers
            agent.args = ["--server", servers[1].url]
        fleet.start()
        run_through(fleet, servers, pg, tmp_path)
    finally:
        if fleet is not None:
            fleet.stop_everything()
        for server in servers:
            server.stop()
            server.http.close()


def build(fleet: Fleet, label: str, pause: str) -> dict[str, Any]:
    fleet.commit(label, environments(pause))
    run = fleet.server.wait_run(fleet.server.post("/api/apps/sample/runs", {})["id"], 120)
    assert run["state"] == "succeeded", run
    return dict(run)


def run_through(fleet: Fleet, servers: list[ServerProcess], pg: Cluster, tmp: Path) -> None:
    server = servers[0]  # the test's reads and the prober's; either may drive
    step = f"for i in $(seq 1200); do [ -e {tmp / 'go'} ] && break; sleep 0.1; done"
    make_repo(tmp / "shop", {"conveyor.yml": config("shop", [step], [])})
    server.add_app("shop", tmp / "shop")
    build(fleet, "v1", "1s")
    wait_for(
        lambda: all(d["state"] in ENDED for d in server.get("/api/deployments?app=sample")),
        timeout=120,
    )
    # a run of another app whose test step waits for the outage (parallel to the next)
    go = tmp / "go"
    shop = server.post("/api/apps/shop/runs", {})["id"]
    wait_for(
        lambda: any(
            s["state"] == "running" and s["kind"] == "test"
            for s in server.get(f"/api/runs/{shop}")["steps"]
        ),
        timeout=60,
    )
    with LoadGenerator(fleet.urls(), clients=2, max_seconds=400, rate=25) as load:
        # a pause long enough to hold the outage: the canary is at 50% when it begins
        run = build(fleet, "v2", "30s")

        def running() -> int | None:
            for d in server.get("/api/deployments?app=sample"):
                if d["release"] == run["release"] and d["state"] == "running":
                    return int(d["id"])
            return None

        deployment = wait_for(running, timeout=60)
        wait_for(
            lambda: any(
                s["state"] == "running" and s["kind"] == "weight"
                for s in server.get(f"/api/deployments/{deployment}")["steps"]
            ),
            timeout=60,
        )
        with Prober(server, deployment) as prober:
            wait_for(lambda: prober.statuses[200] >= len(prober.paths), timeout=30)
            steps = server.get(f"/api/deployments/{deployment}")["steps"]
            assert [s["weight"] for s in steps if s["state"] == "running"] == [50], steps
            pg.halt()
            stopped = time.monotonic()
            try:
                health = wait_for(
                    lambda: (h := server.http.get("/healthz").json()).get("database") and h,
                    timeout=30,
                )
                wait_for(lambda: len(prober.unavailable) >= len(prober.paths), timeout=30)
                go.touch()  # the run's step ends while the database is away
                # the servers live through it, as do the hosts' routers
                wait_for(lambda: time.monotonic() - stopped >= DOWN, timeout=DOWN + 5)
                for s in servers:
                    assert s.proc is not None and s.proc.poll() is None
                    assert s.http.get("/healthz").json()["database"] == "unavailable"
            finally:
                pg.resume()
            for s in servers:
                wait_for(lambda s=s: "database" not in s.http.get("/healthz").json(), 60)
            record = wait_for(
                lambda: (d := server.get(f"/api/deployments/{deployment}"))["state"] in ENDED and d,
                timeout=180,
            )
            retried = server.wait_run(shop, 120)
        assert load.result.failures == 0, (load.result.errors[:5], load.result.statuses)

    # the run lost the database as its step ended: retried once from a clean checkout, as
    # after a server crash (a step's effects are not trusted half-recorded)
    assert (retried["state"], retried["attempt"]) == ("succeeded", 2), retried
    interrupted = [s for s in retried["steps"] if s["state"] == "interrupted"]
    assert [(s["attempt"], s["kind"]) for s in interrupted] == [(1, "test")], retried["steps"]
    assert interrupted[0]["reason"] == "interrupted: the database went away while this step ran"

    # /healthz: still 200, saying the database is away and since when
    assert health["status"] == "degraded" and health["database"] == "unavailable", health
    assert "has not answered since" in health["detail"], health
    # no 500: a clear 503 with Retry-After wherever the database was needed
    assert not prober.failures, prober.failures[:5]
    assert set(prober.statuses) <= {200, 503}, prober.statuses
    # nor to the agents (their long-polls and reports): the servers' access logs
    for s in servers:
        served = Counter(re.findall(r'HTTP/1\.1\\" (\d{3})', s.log()))
        assert not [c for c in served if c >= "500" and c != "503"], (s.url, served)
    # the reads it can: the status and the runs, as last read, saying so (no 503 for them)
    assert set(prober.stale) == {"/api/status", "/api/runs?app=sample"}, prober.stale
    assert not [p for p, *_ in prober.unavailable if p in prober.stale], prober.unavailable
    for path, retry_after, detail in prober.unavailable:
        assert retry_after is not None and int(retry_after) >= 1, (path, retry_after)
        assert "database unavailable" in detail, (path, detail)

    # the deployment paused and resumed to its normal end, nothing half-written
    assert record["state"] == "succeeded", (record["reason"], record["steps"])
    assert all(s["state"] == "succeeded" for s in record["steps"]), record["steps"]
    consistent(fleet, record)
    entries = {s.url: log_entries(s) for s in servers}
    started = Counter(
        (e["deployment"], e["step"])
        for found in entries.values()
        for e in found
        if e.get("msg") == "step started"
    )
    assert started and max(started.values()) == 1, started  # over both servers

    # the loops waited and retried: the outage logged once, its end once, no loop error
    for s in servers:
        messages = Counter(str(e.get("msg")) for e in entries[s.url])
        assert messages["database unavailable"] == 1, (s.url, messages)
        assert messages["database back"] == 1, (s.url, messages)
        noisy = [
            m
            for m in messages
            if m.endswith(("loop error", "scheduler error", "crashed", "courier error"))
            or m in ("lease not renewed", "cluster connection lost")
        ]
        assert not noisy, (s.url, {m: messages[m] for m in noisy})
        assert "Traceback" not in s.log(), s.log()[-3000:]
