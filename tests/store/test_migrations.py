"""The Alembic migrations build exactly the schema the models describe, and keep old data."""

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from sqlalchemy import Connection, Engine, insert, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.store.db import MIGRATIONS, make_engine, migrate
from conveyor.store.models import App, Base, Release, Run


def test_migrations_match_the_models(bare_store_url: str) -> None:
    engine = make_engine(bare_store_url)
    migrate(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def _upgrade(engine: Engine, revision: str) -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def _deployment(conn: Connection, id: int, env: str, state: str) -> None:
    conn.execute(
        text(
            "INSERT INTO deployments (id, app_id, environment, release_id, kind, strategy, "
            "state, trigger, triggered_by, touched, created_at) VALUES "
            "(:id, 1, :env, 'r1', 'deploy', 'rolling', :state, 'api', 'admin', '[]', "
            "'2026-12-01 00:00:00')"
        ),
        {"id": id, "env": env, "state": state},
    )


def test_0007_ends_duplicates_left_by_older_servers_then_holds_one_per_environment(
    bare_store_url: str,
) -> None:
    engine = make_engine(bare_store_url)
    _upgrade(engine, "0006")
    with engine.begin() as conn:  # the app as 0006 had it: the model has columns added since
        conn.execute(
            text(
                "INSERT INTO apps (id, name, repo_url, branch, webhook_secret, public_status, "
                "created_at) VALUES (1, 'shop', 'r', 'main', 's', false, '2026-12-01 00:00:00')"
            )
        )
    with Session(engine) as session:  # runs and releases are as they were in 0006
        # the columns a run and a release had then (later ones, as migration_hash or a
        # run's runner, did not exist)
        run_id = session.execute(
            insert(Run.__table__).values(app_id=1, sha="abc", trigger="manual").returning(Run.id)
        ).scalar_one()
        session.execute(
            insert(Release.__table__).values(
                id="r1", app_id=1, sha="abc", run_id=run_id, sha256="f", size=1
            )
        )
        session.commit()
    with engine.begin() as conn:
        for id, env, state in [
            (1, "production", "queued"),
            (2, "production", "waiting"),
            (3, "production", "queued"),
            (4, "staging", "queued"),
            (5, "production", "running"),
            (6, "production", "aborting"),
            (7, "production", "succeeded"),
            (8, "production", "failed"),
        ]:
            _deployment(conn, id, env, state)
        conn.execute(
            text(
                "INSERT INTO deployment_steps (deployment_id, position, kind, name, targets, "
                "state, detail, log) VALUES (5, 0, 'batch', 'b', '{}', 'running', '{}', '')"
            )
        )
    _upgrade(engine, "head")
    with engine.begin() as conn:
        rows = conn.execute(text("SELECT id, state, reason FROM deployments ORDER BY id")).all()
        step = conn.execute(text("SELECT state FROM deployment_steps")).scalar_one()
    states = {r.id: r.state for r in rows}
    assert states == {
        1: "superseded",
        2: "superseded",
        3: "queued",
        4: "queued",
        5: "failed",
        6: "aborting",
        7: "succeeded",
        8: "failed",
    }
    assert rows[0].reason.startswith("superseded by deployment #3")
    assert "deployment #6 acted on the same environment" in rows[4].reason
    assert step == "cancelled"

    # from now on the database refuses a second one of either kind
    for state in ("waiting", "rolling_back"):
        with pytest.raises(IntegrityError), engine.begin() as conn:
            _deployment(conn, 20, "production", state)
    with engine.begin() as conn:
        _deployment(conn, 21, "production", "cancelled")
        _deployment(conn, 22, "review", "running")
    engine.dispose()


def test_an_artifact_may_pass_2_gib(store_url: str) -> None:
    """Release.size is a 64-bit integer on PostgreSQL too (its `integer` stops at 2 GiB)."""
    engine = make_engine(store_url)
    migrate(engine)
    with Session(engine) as session:
        app = App(name="shop", repo_url="r", webhook_secret="s")
        session.add(app)
        session.flush()
        run = Run(app_id=app.id, sha="abc", trigger="manual")
        session.add(run)
        session.flush()
        big = 3 * 2**30
        session.add(Release(id="r1", app_id=app.id, sha="abc", run_id=run.id, sha256="f", size=big))
        session.commit()
        assert session.get_one(Release, "r1").size == big
    engine.dispose()
