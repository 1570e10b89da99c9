"""An expand migration blocked behind a long transaction, deployed for real: a server, an
agent and its router, the sample app (reading its table on each request) under paced
load, a real PostgreSQL cluster. The migration's session has migrations.lock_timeout
(PGOPTIONS): it gives up after it, the deployment fails with its output, no traffic moves
and the app keeps answering, its reads held up no longer than the lock timeout. A
migration running past migrations.timeout is killed, and fails its deployment the same."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from testbed.postgres import Cluster
from tests.fleet import Fleet, LoadGenerator, running_fleet
from tests.helpers import ServerProcess, commit, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

HOSTS = {"web-1": "127.0.62.11"}

MIGRATING = """
migrations:
  expand: ./bin/migrate
  lock_timeout: {lock_timeout}
  timeout: {timeout}
environments:
  production:
    hosts: [web-1]
    strategy: rolling
    env: {{DATABASE_URL: '{url}', PGAPPNAME: sample-migrate, DB_QUERY: 'SELECT name FROM users'}}
"""


@pytest.fixture
def fleet(server: ServerProcess, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(server, tmp_path, HOSTS) as f:
        yield f


class Probe(threading.Thread):
    """GET the app ten times a second, timing each answer, until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.took, self.failed = url, [0.0], 0
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self.done.wait(0.1):
                started = time.monotonic()
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.took.append(time.monotonic() - started)
                self.failed += not ok

    def __enter__(self) -> Probe:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join(timeout=70)


def deployed(server: ServerProcess, run: int) -> Any:
    def ended() -> Any:
        found = [d for d in server.get("/api/deployments?app=sample") if d["run"] == run]
        if found and found[0]["state"] not in ("queued", "running", "rolling_back"):
            return server.get(f"/api/deployments/{found[0]['id']}")
        return None

    return wait_for(ended, timeout=120, interval=0.3)


def test_a_migration_behind_a_long_transaction_fails_fast_and_moves_no_traffic(
    fleet: Fleet, pg_cluster: Cluster
) -> None:
    server = fleet.server
    url = pg_cluster.url(pg_cluster.create_database())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO users VALUES (1, 'ada')")
    psql = f"{pg_cluster.bin / 'psql'} -X -v ON_ERROR_STOP=1"

    def push(label: str, sql: str, timeout: str = "10m") -> Any:
        script = f'#!/bin/sh\n{psql} "$DATABASE_URL" -c "SHOW lock_timeout" -c "{sql}"\n'
        commit(fleet.repo, {"bin/migrate": script}, executable=("bin/migrate",))
        text = MIGRATING.format(lock_timeout="1s", timeout=timeout, url=url)
        fleet.commit(label, text, start=f"{sys.executable} app/server.py")
        run = server.wait_run(server.post("/api/apps/sample/runs", {})["id"])
        assert run["state"] == "succeeded", run
        return deployed(server, run["id"])

    v1 = push("v1", "SELECT 1")
    assert v1["state"] == "succeeded", v1
    with (
        LoadGenerator(fleet.urls("web-1"), clients=2, rate=25) as load,
        Probe(fleet.url("web-1")) as probe,
        psycopg.connect(url) as long_tx,
    ):
        long_tx.execute("SELECT count(*) FROM users")  # holds its lock until the end
        started = time.monotonic()
        v2 = push("v2", "ALTER TABLE users ADD COLUMN full_name text")
        took = time.monotonic() - started
        long_tx.rollback()
    assert v2["state"] == "failed", v2
    assert "failed on web-1" in v2["reason"], v2["reason"]
    assert "canceling statement due to lock timeout" in v2["reason"], v2["reason"]
    assert [s["kind"] for s in v2["steps"] if s["state"] != "skipped"] == ["migrate", "rollback"]
    assert fleet.serving("web-1") == v1["release"]
    assert v2["release"] not in load.result.releases  # no traffic ever moved to it
    assert load.result.failures == 0, (load.result.errors[:5], load.result.statuses)
    # the run, the build and the deployment together; the migration itself gave up after
    # 1 s instead of waiting as long as the transaction (generous for a loaded machine)
    assert took < 120
    # the app's reads queued behind the migration's lock request for at most lock_timeout
    # (1 s), not as long as the transaction: its slowest answer, generously bounded
    assert probe.failed == 0 and len(probe.took) > 20, probe.took
    assert max(probe.took) < 1 + 5, sorted(probe.took)[-5:]

    # a migration running past migrations.timeout is killed: failed, nothing moved
    v3 = push("v3", "SELECT pg_sleep(60)", timeout="2s")
    assert v3["state"] == "failed", v3
    assert "timed out after 2s and was killed" in v3["reason"], v3["reason"]
    assert [s["kind"] for s in v3["steps"] if s["state"] != "skipped"] == ["migrate", "rollback"]
    assert fleet.serving("web-1") == v1["release"]
