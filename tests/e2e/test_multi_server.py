"""Several `conveyor server` processes on one PostgreSQL database (README: Several servers).

Real processes: two or three servers on 127.0.65.1-3 sharing a database and a data
directory, agents given every server's URL, routers and the sample app on 127.0.65.1x.

- kill-anywhere with two servers: both are started with a crash point, so whichever
  drives the deployment dies there (and the other, once it took over, at its own);
  dead servers come back without one, and the deployment ends as its record says;
- a driver frozen with SIGSTOP: the other server takes its lease over once it expired,
  and the frozen one, resumed, writes nothing more (fencing by the lease's generation);
- three servers, the driver killed one at a time while a 3-host canary goes on: it ends
  as its record says, no step started twice, the agents moved and stayed online; 50
  simulated agents (testbed/simagents.py) poll and report all along, none of them
  without a server for longer than its retry interval, none answered but 2xx or 503.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from conveyor.deploy.orchestrator import CRASH_ENV
from testbed.postgres import Cluster
from testbed.simagents import REPORT_EVERY, RETRY_MAX, SimulatedFleet, enrol
from tests.e2e.test_kill_anywhere import ENDED, consistent
from tests.fleet import Fleet, LoadGenerator
from tests.helpers import ServerProcess, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgresql]

ADDRESSES = ("127.0.65.1", "127.0.65.2", "127.0.65.3")
HOSTS = {"web-1": "127.0.65.11", "web-2": "127.0.65.12", "web-3": "127.0.65.13"}


def environments(hosts: list[str], step_pause: str) -> str:
    return f"""
environments:
  production:
    hosts: [{", ".join(hosts)}]
    strategy: canary
    steps: [50, 100]
    step_pause: {step_pause}
    analysis: {{error_rate: 5%, min_requests: 10}}
    verify:
      - http: GET /healthz
"""


@contextmanager
def servers_on(db: str, tmp: Path, n: int) -> Iterator[list[ServerProcess]]:
    """n servers on one database and one data directory, started one after the other."""
    servers = []
    for i in range(n):
        server = ServerProcess(tmp / "data", host=ADDRESSES[i], args=("--db", db))
        server.log_path = tmp / f"server-{i + 1}.log"
        servers.append(server)
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            if server.proc is not None and server.proc.poll() is None:
                os.kill(server.proc.pid, signal.SIGCONT)
            server.stop()
            server.http.close()


@contextmanager
def fleet_on(servers: list[ServerProcess], tmp: Path, hosts: dict[str, str]) -> Iterator[Fleet]:
    """The sample app and its hosts, each agent given every server (first: the first)."""
    fleet = Fleet(servers[0], tmp, hosts)
    for agent in fleet.agents.values():
        agent.args = ["--server", ",".join(s.url for s in servers[1:])]
    try:
        yield fleet.start()
    finally:
        fleet.stop_everything()


def use(fleet: Fleet, server: ServerProcess) -> None:
    """Make the test's own reads go to this (live) server."""
    fleet.server = server
    for agent in fleet.agents.values():
        agent.server = server


def build(fleet: Fleet, label: str, environments_: str) -> str:
    fleet.commit(label, environments_)
    run = fleet.server.wait_run(fleet.server.post("/api/apps/sample/runs", {})["id"], 120)
    assert run["state"] == "succeeded", run
    wait_for(lambda: ended(fleet.server, None), timeout=120)
    return str(run["release"])


def ended(server: ServerProcess, deployment: int | None) -> Any:
    try:
        if deployment is None:
            return all(d["state"] in ENDED for d in server.get("/api/deployments?app=sample"))
        d = server.get(f"/api/deployments/{deployment}")
    except httpx.HTTPError:
        return None
    return d if d["state"] in ENDED else None


def driver(db: str, deployment: int, servers: list[ServerProcess]) -> tuple[int, int] | None:
    """(index of the server holding the deployment's lease, its generation), if one does."""
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT holder, generation FROM leases WHERE kind = 'deployment' AND key = %s",
            (deployment,),
        ).fetchone()
    if row is None:
        return None
    holder, generation = row
    for i, server in enumerate(servers):
        if str(holder).startswith(server.url + " "):
            return i, int(generation)
    return None


def started_steps(servers: list[ServerProcess]) -> Counter[tuple[int, str]]:
    """How many times each (deployment, step) was started, over every server's log."""
    seen: Counter[tuple[int, str]] = Counter()
    for path in {s.log_path for s in servers}:
        for line in path.read_text(errors="replace").splitlines():
            if '"step started"' not in line:
                continue
            entry = json.loads(line)
            seen[(int(entry["deployment"]), str(entry["step"]))] += 1
    return seen


def alive(server: ServerProcess) -> bool:
    return server.proc is not None and server.proc.poll() is None


@pytest.fixture
def db(pg_cluster: Cluster) -> str:
    return pg_cluster.url(pg_cluster.create_database())


@pytest.mark.timeout(600)
def test_kill_anywhere_with_two_servers_killing_whichever_drives(db: str, tmp_path: Path) -> None:
    hosts = dict(list(HOSTS.items())[:2])
    config = environments(list(hosts), "1s")
    with servers_on(db, tmp_path, 2) as servers, fleet_on(servers, tmp_path, hosts) as fleet:
        v1 = build(fleet, "v1", config)
        outcomes = []
        with LoadGenerator(fleet.urls(), clients=4, max_seconds=500, rate=25) as load:
            v2 = build(fleet, "v2", config)
            serving = consistent(fleet, {"state": "succeeded", "release": v2})
            for k in (2, 5):
                for server in servers:  # whichever drives dies after its k-th change
                    server.stop()
                    server.extra_env = {CRASH_ENV: str(k)}
                    server.start()
                use(fleet, servers[0])
                target = v1 if serving == v2 else v2
                deployment = int(
                    servers[1].post(
                        "/api/apps/sample/environments/production/deploy", {"release": target}
                    )["id"]
                )
                deaths = 0
                record = None
                deadline = time.monotonic() + 180
                while record is None and time.monotonic() < deadline:
                    for server in servers:
                        if not alive(server):  # back without a crash point
                            deaths += 1
                            server.extra_env = {}
                            server.start()
                    live = next(s for s in servers if alive(s))
                    record = ended(live, deployment)
                    time.sleep(0.2)
                assert record is not None, "the deployment did not end within 180 s"
                for server in servers:
                    server.extra_env = {}
                use(fleet, next(s for s in servers if alive(s)))
                serving = consistent(fleet, record)
                outcomes.append((k, deaths, record["state"]))
        print(outcomes)
        assert all(deaths >= 1 for _, deaths, _ in outcomes), outcomes
        assert all(state == "succeeded" for *_, state in outcomes), outcomes
        assert load.result.failures == 0, (load.result.errors[:5], load.result.statuses)
        assert max(started_steps(servers).values()) == 1, started_steps(servers)
        assert v1 != v2


@pytest.mark.timeout(600)
def test_a_frozen_driver_resumed_after_a_takeover_acts_no_more(db: str, tmp_path: Path) -> None:
    hosts = dict(list(HOSTS.items())[:2])
    with servers_on(db, tmp_path, 2) as servers, fleet_on(servers, tmp_path, hosts) as fleet:
        build(fleet, "v1", environments(list(hosts), "1s"))
        with LoadGenerator(fleet.urls(), clients=2, max_seconds=500, rate=25) as load:
            # long canary pauses: the deployment outlives the freeze and the takeover
            fleet.commit("v2", environments(list(hosts), "25s"))
            run = fleet.server.wait_run(fleet.server.post("/api/apps/sample/runs", {})["id"], 120)
            assert run["state"] == "succeeded", run
            deployment = wait_for(
                lambda: next(
                    (
                        int(d["id"])
                        for d in fleet.server.get("/api/deployments?app=sample")
                        if d["release"] == run["release"] and d["state"] == "running"
                    ),
                    None,
                ),
                timeout=60,
            )
            first, generation = wait_for(lambda: driver(db, deployment, servers), timeout=30)
            frozen, other = servers[first], servers[1 - first]
            use(fleet, other)
            assert frozen.proc is not None
            os.kill(frozen.proc.pid, signal.SIGSTOP)
            try:
                # the lease expires (10 s) and the other server takes it over
                taken = wait_for(
                    lambda: (d := driver(db, deployment, servers)) and d[0] != first and d,
                    timeout=60,
                )
                assert taken[1] == generation + 1, taken
            finally:
                os.kill(frozen.proc.pid, signal.SIGCONT)
            wait_for(lambda: '"lease lost"' in frozen.log(), timeout=60)
            record = wait_for(lambda: ended(other, deployment), timeout=240)
        assert record["state"] == "succeeded", record
        consistent(fleet, record)
        assert max(started_steps(servers).values()) == 1, started_steps(servers)
        # nothing of that deployment from the resumed server after it lost the lease
        after = frozen.log().split('"lease lost"', 1)[1]
        assert f'"deployment": {deployment}' not in after.split("\n", 1)[1], after[-2000:]
        assert load.result.failures == 0, (load.result.errors[:5], load.result.statuses)
        assert alive(frozen)


# An agent is never without a server for longer than this: between two exchanges it waits
# REPORT_EVERY (2 s); a server killed with kill -9 is noticed at once (its connections
# are reset, a new one refused) and the next one tried at once; a round of servers
# without an answer waits RETRY_MAX (5 s) at most. Plus 3 s for a loaded 2-core machine.
NO_SERVER_MAX = REPORT_EVERY + RETRY_MAX + 3.0


@pytest.mark.timeout(600)
def test_three_servers_killed_one_at_a_time_during_a_canary(db: str, tmp_path: Path) -> None:
    with servers_on(db, tmp_path, 3) as servers, fleet_on(servers, tmp_path, HOSTS) as fleet:
        build(fleet, "v1", environments(list(HOSTS), "1s"))
        # 50 simulated agents on every server's URL (hosts in no environment: they poll
        # and report, nothing is deployed to them), from before the canary to its end
        tokens = enrol(servers[0], [f"sim-{i:02d}" for i in range(50)])
        with (
            SimulatedFleet([s.url for s in servers], tokens) as simulated,
            LoadGenerator(fleet.urls(), clients=3, max_seconds=500, rate=25) as load,
        ):
            wait_for(simulated.online, timeout=60)
            # pauses long enough for two kills, each with a takeover, a restart and every
            # agent back online (on a loaded machine the canary may end after one)
            fleet.commit("v2", environments(list(HOSTS), "12s"))
            run = fleet.server.wait_run(fleet.server.post("/api/apps/sample/runs", {})["id"], 120)
            assert run["state"] == "succeeded", run
            deployment = wait_for(
                lambda: next(
                    (
                        int(d["id"])
                        for d in fleet.server.get("/api/deployments?app=sample")
                        if d["release"] == run["release"]
                    ),
                    None,
                ),
                timeout=60,
            )
            kills = 0
            record = None
            while record is None:
                found = driver(db, deployment, servers)
                record = ended(next(s for s in servers if alive(s)), deployment)
                if found is None or record is not None or kills >= 2:
                    time.sleep(0.2)
                    continue
                victim = servers[found[0]]
                use(fleet, next(s for s in servers if s is not victim))
                victim.kill()  # kill -9 the server driving the canary
                kills += 1
                # another one continues it: the lease moves (generation + 1)
                wait_for(
                    lambda v=found: (d := driver(db, deployment, servers)) and d[1] > v[1],
                    timeout=30,
                )
                victim.start()  # back, and the next kill may hit another one
                # every host still reports: the agents moved to a live server
                for agent in fleet.agents.values():
                    wait_for(agent._online, timeout=20)
            assert kills >= 1  # two when the machine is quick enough: the loop tries
        gaps = sorted(a.longest_gap for a in simulated.agents)
        print(
            f"simulated agents: longest gap without a server {gaps[-1]:.1f} s, median "
            f"{gaps[len(gaps) // 2]:.1f} s, moves {sum(a.moves for a in simulated.agents)}"
        )
        assert gaps[-1] <= NO_SERVER_MAX, [
            (a.name, round(a.longest_gap, 1))
            for a in simulated.agents
            if a.longest_gap > NO_SERVER_MAX
        ]
        assert simulated.bad == [], simulated.bad[:5]  # nothing but 2xx and 503
        assert record["state"] == "succeeded", (record["reason"], record.get("steps"), kills)
        use(fleet, servers[0])
        consistent(fleet, record)
        assert max(started_steps(servers).values()) == 1, started_steps(servers)
        assert load.result.failures == 0, (load.result.errors[:5], load.result.statuses)
