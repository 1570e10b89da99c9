"""An expand migration blocked behind a long transaction, deployed for real: a server, an
agent and its router, the sample app under paced load, a real PostgreSQL cluster. The
migration's session has migrations.lock_timeout (PGOPTIONS): it gives up after it, the
deployment fails with its output, no traffic moves and the app keeps answering."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
environments:
  production:
    hosts: [web-1]
    strategy: rolling
    env: {{DATABASE_URL: '{url}', PGAPPNAME: sample-migrate}}
"""


@pytest.fixture
def fleet(server: ServerProcess, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(server, tmp_path, HOSTS) as f:
        yield f


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
    psql = f"{pg_cluster.bin / 'psql'} -X -v ON_ERROR_STOP=1"

    def push(label: str, sql: str) -> Any:
        script = f'#!/bin/sh\n{psql} "$DATABASE_URL" -c "SHOW lock_timeout" -c "{sql}"\n'
        commit(fleet.repo, {"bin/migrate": script}, executable=("bin/migrate",))
        fleet.commit(label, MIGRATING.format(lock_timeout="1s", url=url))
        run = server.wait_run(server.post("/api/apps/sample/runs", {})["id"])
        assert run["state"] == "succeeded", run
        return deployed(server, run["id"])

    v1 = push("v1", "SELECT 1")
    assert v1["state"] == "succeeded", v1
    with (
        LoadGenerator(fleet.urls("web-1"), clients=2, rate=25) as load,
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
