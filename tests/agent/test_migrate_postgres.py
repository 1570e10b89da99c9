"""The expand migration's PostgreSQL session gets lock_timeout and statement_timeout
(PGOPTIONS): a migration blocked behind a long transaction fails fast, on a real cluster,
instead of queueing the app's queries behind its lock."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psycopg
import pytest

from conveyor.agent.installer import Installer
from conveyor.agent.migrations import Migrations
from conveyor.config.migrations import pg_options
from conveyor.deploy.desired import migrate_request
from conveyor.protocol import MigrateRequest
from conveyor.store.models import Release
from testbed.postgres import Cluster

ALTER = "ALTER TABLE users ADD COLUMN full_name text"


@pytest.fixture
def database(pg_cluster: Cluster) -> str:
    url = pg_cluster.url(pg_cluster.create_database())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO users SELECT i, 'n' || i FROM generate_series(1, 100) i")
    return url


def psql(pg_cluster: Cluster, sql: str) -> str:
    return f"{pg_cluster.bin / 'psql'} -v ON_ERROR_STOP=1 -X \"$DATABASE_URL\" -c '{sql}'"


async def waiting_for_its_lock(
    conn: psycopg.AsyncConnection[tuple[object, ...]], run: object
) -> None:
    """Until the migration's ALTER waits for a lock (PGAPPNAME shop-migrate)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'shop-migrate' "
            "AND wait_event_type = 'Lock'"
        )
        row = await cur.fetchone()
        if row and row[0]:
            return
        assert not (isinstance(run, asyncio.Task) and run.done()), "the migration ended first"
        await asyncio.sleep(0.05)
    raise AssertionError("the migration never waited for its lock")


async def test_a_migration_behind_a_long_transaction_fails_after_the_lock_timeout(
    pg_cluster: Cluster, database: str, data: Path, tmp_path: Path
) -> None:
    release_dir = tmp_path / "release"
    release_dir.mkdir()
    migrations = Migrations(Installer(data))
    request = MigrateRequest(
        id="deployment-1",
        command=f"{psql(pg_cluster, 'SHOW lock_timeout')} && {psql(pg_cluster, ALTER)}",
        pg_options=pg_options(1.0, 60.0),
        timeout=120.0,
    )
    env = {"DATABASE_URL": database, "PGAPPNAME": "shop-migrate"}
    # a long transaction of the serving release holds a lock the ALTER waits for
    async with await psycopg.AsyncConnection.connect(database) as long_tx:
        await long_tx.execute("SELECT count(*) FROM users")
        started = time.monotonic()
        run = asyncio.create_task(migrations.run("shop", "r1", request, release_dir, env))
        async with await psycopg.AsyncConnection.connect(database, autocommit=True) as app:
            await waiting_for_its_lock(app, run)
            # the app's reads queue behind the waiting ALTER...
            cur = await app.execute("SELECT count(*) FROM users")
            # ...until the lock timeout ends its wait: then they are answered
            assert await cur.fetchone() == (100,)
        result = await run
        took = time.monotonic() - started
    assert result.state == "failed" and result.exit_code == 1, result
    assert "1s" in result.output  # SHOW lock_timeout, from PGOPTIONS
    assert "canceling statement due to lock timeout" in result.output
    # 1 s of lock_timeout; the bound is generous for a loaded machine, and still far
    # below the default hook timeout the migration would otherwise hold the lock for
    assert took < 30.0
    with psycopg.connect(database) as conn:
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'users'"
        ).fetchall()
    assert ("full_name",) not in columns


async def test_the_apps_own_pgoptions_come_after_and_win(
    pg_cluster: Cluster, database: str, data: Path, tmp_path: Path
) -> None:
    release_dir = tmp_path / "release"
    release_dir.mkdir()
    show = "SELECT current_setting($$lock_timeout$$), current_setting($$statement_timeout$$)"
    request = MigrateRequest(
        id="deployment-2", command=psql(pg_cluster, show), pg_options=pg_options(10.0, 3600.0)
    )
    env = {"DATABASE_URL": database, "PGOPTIONS": "-c statement_timeout=5min"}
    result = await Migrations(Installer(data)).run("shop", "r1", request, release_dir, env)
    assert result.state == "succeeded", result
    assert "10s" in result.output and "5min" in result.output


@pytest.mark.parametrize(
    ("yml", "command", "options"),
    [
        ("hooks:\n  migrate: ./m\n", "./m", "-c lock_timeout=10000 -c statement_timeout=3600000"),
        (
            "migrations:\n  expand: ./e\n  lock_timeout: 2s\n  statement_timeout: 0\n",
            "./e",
            "-c lock_timeout=2000",
        ),
        ("migrations:\n  contract: ./c\n", None, None),
    ],
)
def test_the_desired_state_carries_the_expand_command_and_its_timeouts(
    yml: str, command: str | None, options: str | None
) -> None:
    from conveyor.config import parse_config

    release = Release(config=parse_config("app: shop\n" + yml).model_dump_json())
    request = migrate_request(release, "deployment-3")
    if command is None:
        assert request is None
        return
    assert request is not None
    assert (request.command, request.pg_options) == (command, options)
