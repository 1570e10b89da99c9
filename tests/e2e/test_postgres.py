"""`conveyor server --db postgresql://…`: a run, a canary deployment and kill-anywhere.

One server on a fresh PostgreSQL database (which it migrates at start) and two hosts
on 127.0.49.x. The same checks as tests/e2e/test_kill_anywhere.py, at three of its
crash points (early, middle, late in a canary deployment) rather than all of them:
the full set on PostgreSQL too would add minutes to the suite; the crash recovery
itself does not depend on the engine, its transactions do.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from alembic.script import ScriptDirectory

from conveyor.store.db import MIGRATIONS
from testbed.postgres import Cluster
from tests.e2e.test_kill_anywhere import build, consistent, deploy_crashing_after
from tests.fleet import Fleet, LoadGenerator, running_fleet
from tests.helpers import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.postgresql]

HOSTS = {"web-1": "127.0.49.11", "web-2": "127.0.49.12"}
CRASH_POINTS = (1, 4, 7)  # persisted deployment changes after which the server dies


@pytest.fixture(scope="module")
def db(pg_cluster: Cluster) -> str:
    return pg_cluster.url(pg_cluster.create_database())


@pytest.fixture(scope="module")
def fleet(db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("pg-fleet")
    server = ServerProcess(tmp / "data", host="127.0.49.1", args=("--db", db)).start()
    try:
        with running_fleet(server, tmp, HOSTS) as f:
            yield f
    finally:
        server.stop()
        server.http.close()


@pytest.fixture(scope="module")
def releases(fleet: Fleet) -> tuple[str, str]:
    """v1 built and deployed, then v2 built and sent out by canary under load."""
    v1 = build(fleet, "v1")
    with LoadGenerator(fleet.urls(), clients=4, max_seconds=300, rate=25) as load:
        v2 = build(fleet, "v2")
    assert load.result.failures == 0, (load.result.errors[:5], load.result.statuses)
    return v1, v2


def rows(db: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(db) as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.timeout(300)
def test_a_run_and_a_canary_deployment_are_recorded_in_postgresql(
    fleet: Fleet, releases: tuple[str, str], db: str
) -> None:
    v1, v2 = releases
    # the first deployment of v2 (the kill-anywhere test may have run first, then more)
    record = min(
        (d for d in fleet.server.get("/api/deployments?app=sample") if d["release"] == v2),
        key=lambda d: int(d["id"]),
    )
    assert (record["state"], record["strategy"], record["trigger"]) == (
        "succeeded",
        "canary",
        "pipeline",
    )
    # the records are PostgreSQL's (no SQLite file beside them), the schema at its head
    assert not (fleet.server.data / "conveyor.db").exists()
    assert rows(db, "SELECT release_id, state FROM runs ORDER BY id")[:2] == [
        (v1, "succeeded"),
        (v2, "succeeded"),
    ]
    steps = rows(
        db,
        "SELECT s.kind, s.state, s.detail FROM deployment_steps s JOIN deployments d "
        f"ON d.id = s.deployment_id WHERE d.id = {int(record['id'])} ORDER BY s.position",
    )
    assert steps and all(state == "succeeded" for _, state, _ in steps), steps
    # a canary step's detail was written key by key with jsonb (store/steps.py)
    assert any('"judge' in str(detail) or '"points' in str(detail) for *_, detail in steps)
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()  # the newest migration
    assert rows(db, "SELECT version_num FROM alembic_version") == [(head,)]


@pytest.mark.timeout(600)
def test_the_server_killed_at_crash_points_ends_consistent_on_postgresql(
    fleet: Fleet, releases: tuple[str, str]
) -> None:
    v1, v2 = releases
    serving = consistent(fleet, {"state": "succeeded", "release": v2})
    outcomes = []
    with LoadGenerator(fleet.urls(), clients=4, max_seconds=600, rate=25) as load:
        for k in CRASH_POINTS:
            target = v1 if serving == v2 else v2
            died, record = deploy_crashing_after(fleet, target, k)
            serving = consistent(fleet, record)
            outcomes.append((k, died, record["state"], [s["state"] for s in record["steps"]]))
    for outcome in outcomes:
        print(outcome)
    assert all(died for _, died, _, _ in outcomes), outcomes
    assert all(state == "succeeded" for _, _, state, _ in outcomes), outcomes
    assert load.result.failures == 0, (load.result.errors[:5], load.result.statuses)
