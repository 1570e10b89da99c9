"""Failover: kill -9 the server driving a canary deployment; how long until another continues.

PostgreSQL 15 (a throwaway cluster, testbed/postgres.py), two real servers sharing it
(and a data directory) on 127.0.65.1-2, two real hosts (agents, embedded routers, the
sample app) on 127.0.65.21-22 (`--net`: another /24) whose agents know both servers,
and paced load on the hosts the whole time. A release goes out by canary (steps 50, 100; a pause of
`--pause` seconds each); during its first pause the server holding its lease is
killed with SIGKILL. Printed, per round: the time from the kill to the other server
holding the lease (it continues the deployment), to its next step change, the
deployment's end, and the failed requests the hosts' clients saw (goal: < 15 s, 0).

    uv run python bench/failover.py [--rounds 3] [--pause 5] [--net 127.0.65]

The load starts once the first release serves on both hosts, and each kill comes
during the 50% step (its pause).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testbed.fleet import Fleet, LoadGenerator
from testbed.helpers import ServerProcess, wait_for
from testbed.postgres import Cluster

NET = "127.0.65"  # servers on .1-2, hosts on .21-22 (--net: another /24 of loopback)
ENDED = ("succeeded", "failed", "cancelled", "superseded")


def environments(pause: float) -> str:
    return f"""
environments:
  production:
    hosts: [web-1, web-2]
    strategy: canary
    steps: [50, 100]
    step_pause: {pause:g}s
    analysis: {{error_rate: 5%, min_requests: 10}}
"""


def lease(db: str, deployment: int) -> tuple[str, int] | None:
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT holder, generation FROM leases WHERE kind = 'deployment' AND key = %s",
            (deployment,),
        ).fetchone()
    return (str(row[0]), int(row[1])) if row else None


def steps(server: ServerProcess, deployment: int) -> list[tuple[str, str, str]]:
    d = server.get(f"/api/deployments/{deployment}")
    return [(s["kind"], s["name"], s["state"]) for s in d["steps"]]


def serves(fleet: Fleet, host: str) -> bool:
    try:
        return bool(fleet.serving(host))
    except httpx.HTTPError:
        return False


def one_round(
    fleet: Fleet, servers: list[ServerProcess], db: str, label: str, pause: float
) -> dict[str, Any]:
    fleet.commit(label, environments(pause))
    run = fleet.server.wait_run(fleet.server.post("/api/apps/sample/runs", {})["id"], 180)
    assert run["state"] == "succeeded", run

    def running() -> int | None:
        for d in fleet.server.get("/api/deployments?app=sample"):
            if d["release"] == run["release"] and d["state"] == "running":
                return int(d["id"])
        return None

    deployment = wait_for(running, timeout=120)
    holder, generation = wait_for(lambda: lease(db, deployment), timeout=60)
    victim = next(s for s in servers if holder.startswith(s.url + " "))
    other = next(s for s in servers if s is not victim)
    fleet.server = other
    for agent in fleet.agents.values():
        agent.server = other
    # during the first pause: the canary's 50% step is running
    wait_for(
        lambda: any(k == "weight" and st == "running" for k, _, st in steps(other, deployment)),
        60,
    )
    before = steps(other, deployment)
    killed = time.monotonic()
    victim.kill()
    wait_for(lambda: (found := lease(db, deployment)) is not None and found[1] > generation, 60)
    taken = time.monotonic() - killed
    wait_for(lambda: steps(other, deployment) != before, timeout=120)
    moved = time.monotonic() - killed
    record = wait_for(
        lambda: (d := other.get(f"/api/deployments/{deployment}"))["state"] in ENDED and d,
        timeout=240,
    )
    ended = time.monotonic() - killed
    victim.start()
    return {"taken": taken, "next_step": moved, "ended": ended, "state": record["state"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pause", type=float, default=5.0, help="canary step pause (s)")
    parser.add_argument("--net", default=NET, help=f"the loopback /24's first three bytes ({NET})")
    args = parser.parse_args()
    pg = Cluster().start()
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-failover-"))
    servers: list[ServerProcess] = []
    fleet = None
    try:
        db = pg.url(pg.create_database())
        for i in range(2):
            server = ServerProcess(tmp / "data", host=f"{args.net}.{i + 1}", args=("--db", db))
            server.log_path = tmp / f"server-{i + 1}.log"
            servers.append(server.start())
        hosts = {"web-1": f"{args.net}.21", "web-2": f"{args.net}.22"}
        fleet = Fleet(servers[0], tmp, hosts)
        for agent in fleet.agents.values():
            agent.args = ["--server", servers[1].url]
        fleet.start()
        print(f"load before: {os.getloadavg()[0]:.1f}", flush=True)
        fleet.commit("v0", environments(1))
        fleet.server.wait_run(fleet.server.post("/api/apps/sample/runs", {})["id"], 180)
        # the load starts once v0 serves on every host (its first deployment ended)
        wait_for(
            lambda: all(d["state"] in ENDED for d in fleet.server.get("/api/deployments")),
            timeout=180,
        )
        for host in hosts:
            wait_for(lambda h=host: serves(fleet, h), timeout=60)
        results = []
        with LoadGenerator(fleet.urls(), clients=4, max_seconds=1800, rate=25) as load:
            for i in range(args.rounds):
                result = one_round(fleet, servers, db, f"v{i + 1}", args.pause)
                results.append(result)
                print(
                    f"round {i + 1}: another server holds the lease {result['taken']:.1f} s "
                    f"after the kill, next step change {result['next_step']:.1f} s, ended "
                    f"{result['state']} {result['ended']:.1f} s",
                    flush=True,
                )
        worst = max(r["taken"] for r in results)
        failures = load.result.failures
        if failures:
            print(f"failed: {dict(load.result.statuses)} {load.result.errors[:3]}")
        print(
            f"worst takeover {worst:.1f} s; requests {load.result.sent}, failed {failures}; "
            f"goal (< 15 s, 0 failed): {'PASS' if worst < 15 and failures == 0 else 'MISS'}"
        )
    finally:
        if fleet is not None:
            fleet.stop_everything()
        for server in servers:
            server.stop()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
