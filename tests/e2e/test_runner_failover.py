"""A runner beside several servers: the server it talks to is killed while it runs a step.

Real processes: two `conveyor server`s on one PostgreSQL database and one data
directory (127.0.76.21-22), a `conveyor runner` connecting from 127.0.76.23 given both
URLs, the first first. Its test step waits for the test's go-ahead; meanwhile the
server the runner talks to is killed with SIGKILL. The runner's heartbeats (two are
waited for before the step may end), log uploads, artifact upload and reports move to
the other server, and the run stays the runner's (its claim is a row of the shared
database, not a server's: no takeover is needed, and none retries it); it ends there
succeeded on its first attempt, by the same runner, each step run once (the step
counts its starts in a file the retry would append to as well).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from testbed.helpers import ServerProcess, config, make_repo, wait_for
from testbed.postgres import Cluster
from tests.e2e.test_runners import RunnerProcess, live, log_of

pytestmark = [pytest.mark.slow, pytest.mark.postgresql]

SERVERS = ("127.0.76.21", "127.0.76.22")
RUNNER = "127.0.76.23"


@pytest.fixture
def servers(pg_cluster: Cluster, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    db = pg_cluster.url(pg_cluster.create_database())
    started = []
    try:
        for i, address in enumerate(SERVERS):
            server = ServerProcess(tmp_path / "data", host=address, args=("--db", db))
            server.log_path = tmp_path / f"server-{i + 1}.log"
            started.append(server.start())
        yield started
    finally:
        for server in started:
            server.stop()
            server.http.close()


def claim_expiry(db: str, run_id: int) -> datetime:
    """When the runner's claim of the run expires, unless its heartbeats push it on."""
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT runner_expires_at FROM runs WHERE id = %s", (run_id,))
        found = row.fetchone()
    assert found is not None and isinstance(found[0], datetime), found
    return found[0]


@pytest.mark.timeout(300)
def test_the_runner_s_server_killed_mid_step_the_run_ends_on_the_other(
    servers: list[ServerProcess], tmp_path: Path
) -> None:
    first, other = servers
    db = first.args[first.args.index("--db") + 1]
    made = first.cli("token", "create", "runner", "--role", "runner", "--json")
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)["token"]
    starts, pid, go = tmp_path / "starts", tmp_path / "step.pid", tmp_path / "go"
    # counts its starts, then waits (at most 2 minutes) for the test to let it end
    step = (
        f"echo started >> {starts}; echo $$ > {pid}; "
        f"for i in $(seq 1200); do [ -e {go} ] && break; sleep 0.1; done; [ -e {go} ]"
    )
    repo = tmp_path / "repo"
    make_repo(repo, {"conveyor.yml": config("shop", [step], ["echo built > BUILT"])})
    first.add_app("shop", repo)
    runner = RunnerProcess(
        first, token, "r1", tmp_path, urls=f"{first.url},{other.url}", bind=RUNNER
    ).start()
    try:
        wait_for(lambda: live(first, "r1"), timeout=60)
        run_id = first.post("/api/apps/shop/runs", {})["id"]
        wait_for(lambda: pid.exists() and first.get(f"/api/runs/{run_id}")["runner"], 120)
        first.kill()  # kill -9 the server the runner talks to, mid-step
        # the runner moves to the other server, whose records keep the run its own: two
        # heartbeats through it (every 2 s) push the claim's expiry on, twice
        wait_for(lambda: "server did not answer" in runner.log(), timeout=30)
        for _ in range(2):
            seen = claim_expiry(db, run_id)
            wait_for(lambda s=seen: claim_expiry(db, run_id) > s, timeout=30)
        assert live(other, "r1")
        go.touch()
        run = other.wait_run(run_id, 180)
        assert run["state"] == "succeeded", (run, log_of(other, run_id))
        assert (run["attempt"], run["runner"]) == (1, "r1"), run
        steps = [(s["attempt"], s["kind"], s["state"]) for s in run["steps"]]
        assert all(state == "succeeded" for *_, state in steps), steps
        assert starts.read_text().splitlines() == ["started"]  # the step ran once
        assert other.get(f"/api/releases/{run['release']}")["sha256"]
        assert "on runner r1" in log_of(other, run_id)
        assert runner.proc is not None and runner.proc.poll() is None
    finally:
        runner.stop()
        with contextlib.suppress(OSError, ValueError):
            os.killpg(int(pid.read_text()), signal.SIGKILL)
