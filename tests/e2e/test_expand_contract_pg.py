"""Issue 18's acceptance on a real PostgreSQL cluster: the sample app reads a column of
its database (DB_QUERY), each environment its own database; staging then production.

- A rename in one step fails its run at the lint: no release.
- A rename split into expand (add full_name, backfill; the release reads it) and contract
  (drop name) deploys through both under paced load with 0 failed requests; each
  environment's contract runs by itself only once the previous release went cold.
- A rollback past the applied contract is refused with its reason.
- An expand that drops the column the serving release reads is stopped on staging by the
  old-release check (the verify checks against the previous release, migrated schema);
  production is never touched.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from testbed.postgres import Cluster
from tests.fleet import Fleet, LoadGenerator, running_fleet
from tests.helpers import ServerProcess, commit, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

HOSTS = {"stage-1": "127.0.62.21", "web-1": "127.0.62.22"}

CONFIG = """
migrations:
{migrations}  lock_timeout: 5s
environments:
  staging:
    hosts: [stage-1]
    strategy: rolling
    env: {{DATABASE_URL: '{staging}', DB_QUERY: '{query}'}}
    verify:
      - http: GET /
  production:
    hosts: [web-1]
    strategy: rolling
    env: {{DATABASE_URL: '{production}', DB_QUERY: '{query}'}}
    verify:
      - http: GET /
"""

ACTIVE = ("queued", "waiting", "running", "rolling_back")


@pytest.fixture
def fleet(server: ServerProcess, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(server, tmp_path, HOSTS) as f:
        yield f


def deployment(server: ServerProcess, kind: str, env: str, release: str) -> Any:
    """The newest deployment of this kind, environment and release, once it ended."""

    def look() -> Any:
        found = [
            d
            for d in server.get("/api/deployments?app=sample")
            if (d["kind"], d["environment"], d["release"]) == (kind, env, release)
        ]
        if found and found[0]["state"] not in ACTIVE:
            return server.get(f"/api/deployments/{found[0]['id']}")
        return None

    return wait_for(look, timeout=150, interval=0.3)


def columns(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'users'"
        ).fetchall()
    return {r[0] for r in rows}


def test_expand_then_contract_under_load_and_the_old_release_check(
    fleet: Fleet, pg_cluster: Cluster
) -> None:
    server = fleet.server
    urls = {env: pg_cluster.url(pg_cluster.create_database()) for env in ("staging", "production")}
    for url in urls.values():
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE users (id int PRIMARY KEY, name text)")
            conn.execute("INSERT INTO users VALUES (1, 'ada')")
    psql = f"{pg_cluster.bin / 'psql'} -X -v ON_ERROR_STOP=1"

    def run(label: str, query: str, expand: str = "", contract: str = "", waiver: str = "") -> Any:
        """A run of a release reading `query`, with these migrations (SQL run by psql); the
        expand's SQL is also in migrations/expand.sql, which the lint reads."""
        phases = {name: sql for name, sql in (("expand", expand), ("contract", contract)) if sql}
        files = {
            f"bin/{name}": f'#!/bin/sh\nexec {psql} "$DATABASE_URL" -c "{sql}"\n'
            for name, sql in phases.items()
        }
        keys = "".join(f"  {name}: ./bin/{name}\n" for name in phases)
        if expand:
            files["migrations/expand.sql"] = waiver + expand.replace("; ", ";\n") + ";\n"
            keys += "  sql: cat migrations/expand.sql\n"
        if files:
            commit(fleet.repo, files, executable=tuple(f for f in files if f.startswith("bin/")))
        text = CONFIG.format(migrations=keys, query=query, **urls)
        fleet.commit(label, text, keep_warm="3s", start=f"{sys.executable} app/server.py")
        return server.wait_run(server.post("/api/apps/sample/runs", {})["id"], timeout=120)

    def push(label: str, query: str, expand: str = "", contract: str = "", waiver: str = "") -> str:
        """As run, which must succeed: the release's id."""
        done = run(label, query, expand, contract, waiver)
        assert done["state"] == "succeeded", done
        return str(done["release"])

    v1 = push("v1", "SELECT name FROM users WHERE id = 1")
    for env in ("staging", "production"):
        assert deployment(server, "deploy", env, v1)["state"] == "succeeded"

    # the rename in one step: the lint stops it before a release is built
    renamed = run(
        "rename",
        "SELECT full_name FROM users",
        expand="ALTER TABLE users RENAME COLUMN name TO full_name",
    )
    assert renamed["state"] == "failed" and renamed["release"] is None, renamed
    assert "migrations lint" in renamed["reason"], renamed["reason"]

    with LoadGenerator(fleet.urls(), clients=2, rate=25) as load:
        # expand: the new column beside the old, backfilled; the new release reads it
        v2 = push(
            "v2",
            "SELECT full_name FROM users WHERE id = 1",
            expand="ALTER TABLE users ADD COLUMN full_name text; UPDATE users SET full_name = name",
        )
        for env in ("staging", "production"):
            d = deployment(server, "deploy", env, v2)
            assert d["state"] == "succeeded", d
            kinds = [s["kind"] for s in d["steps"]]
            assert kinds[:3] == ["migrate", "compat", "batch"], kinds
        # contract: the old column dropped, by itself once v2 (older than v3) went cold
        v3 = push(
            "v3",
            "SELECT full_name FROM users WHERE id = 1",
            contract="ALTER TABLE users DROP COLUMN name",
        )
        for env in ("staging", "production"):
            d = deployment(server, "deploy", env, v3)
            assert d["state"] == "succeeded", d
            assert "contract" not in [s["kind"] for s in d["steps"]]
        for env, host in (("staging", "stage-1"), ("production", "web-1")):
            applied = deployment(server, "contract", env, v3)
            assert applied["state"] == "succeeded", applied
            assert applied["steps"][0]["kind"] == "contract"
            held = {r["release"]: r["phase"] for r in fleet.agents[host].app("sample")["releases"]}
            assert held.get(v2, "stopped") in ("stopped", "failed"), held
            assert columns(urls[env]) == {"id", "full_name"}
        load.wait_requests(50)
    assert load.result.failures == 0, (load.result.errors[:5], load.result.statuses)
    assert {v1, v2, v3} <= set(load.result.releases)

    refused = server.http.post("/api/apps/sample/environments/production/rollback", json={"to": v2})
    assert refused.status_code == 409, refused.text
    assert f"the contract migration of release {v3} has been applied" in refused.text

    # an expand dropping the column the serving release (v3) reads: stopped on staging
    with LoadGenerator(fleet.urls("web-1"), clients=2, rate=25) as load:
        # (its lint finding waived: a person believed it safe; the old-release check knows)
        v4 = push(
            "v4",
            "SELECT 1",
            expand="ALTER TABLE users DROP COLUMN full_name",
            waiver="-- conveyor: waive ban-drop-column: nothing reads it any more\n",
        )
        staged = deployment(server, "deploy", "staging", v4)
        assert staged["state"] == "failed", staged
        reason = staged["reason"]
        assert f"the previous release {v3} failed the verify checks" in reason, reason
        assert "not backward compatible" in reason, reason
        assert [s["kind"] for s in staged["steps"] if s["state"] != "skipped"][:2] == [
            "migrate",
            "compat",
        ]
        load.wait_requests(25)
    production = [
        d
        for d in server.get("/api/deployments?app=sample")
        if d["environment"] == "production" and d["release"] == v4
    ]
    assert production == []
    assert columns(urls["production"]) == {"id", "full_name"}
    assert fleet.serving("web-1") == v3
    assert load.result.failures == 0, (load.result.errors[:5], load.result.statuses)
