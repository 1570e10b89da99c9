"""The migration hash gate on a real store: the migrate and contract steps that succeeded
with a hash, the expand refused (as a deployment would be, queued or starting) and the
contract waiting until the same hash succeeded in the environment before."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from conveyor.config.loader import parse_config
from conveyor.deploy import contracting, migrationgate
from conveyor.deploy.gates import GateError, expand_passed
from conveyor.deploy.watching import migration_timeout
from conveyor.protocol import ReleaseWeight
from conveyor.store.db import make_engine, migrate, session_factory
from conveyor.store.models import App, Deployment, DeploymentStep, Release, Run

CONFIG = parse_config(
    """
app: shop
service: {start: ./serve, port: 8000}
migrations: {expand: ./bin/expand, contract: ./bin/contract}
environments:
  staging:
    hosts: [s-1]
  production:
    hosts: [p-1]
"""
)


@pytest.fixture
def session(tmp_path: Path) -> Session:
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    migrate(engine)
    made: sessionmaker[Session] = session_factory(engine)
    s = made()
    app = App(name="shop", repo_url="/shop.git", webhook_secret="s")
    s.add(app)
    s.flush()
    run = Run(app_id=app.id, sha="ab" * 20, trigger="push", state="succeeded")
    s.add(run)
    s.flush()
    for name, digest in (("r1", "1" * 64), ("r2", "2" * 64)):
        s.add(
            Release(
                id=name,
                app_id=app.id,
                sha="ab" * 20,
                run_id=run.id,
                sha256="0" * 64,  # the same bytes
                size=1,
                config=CONFIG.model_dump_json(),
                migration_hash=digest,
            )
        )
    s.commit()
    return s


def ran(session: Session, env: str, release: str, kind: str, digest: str, state: str) -> None:
    """A deployment of `release` to `env` whose `kind` step ended in `state` with `digest`."""
    app = session.query(App).one()
    d = Deployment(
        app_id=app.id,
        environment=env,
        release_id=release,
        kind="deploy" if kind == "migrate" else "contract",
        strategy="rolling",
        trigger="pipeline",
        triggered_by="t",
        state=state,
    )
    d.steps.append(
        DeploymentStep(position=0, kind=kind, name=kind, state=state, migration_hash=digest)
    )
    session.add(d)
    session.commit()


def test_the_steps_that_succeeded_with_a_hash(session: Session) -> None:
    app_id = session.query(App).one().id
    ran(session, "staging", "r1", "migrate", "1" * 64, "succeeded")
    ran(session, "staging", "r1", "contract", "1" * 64, "failed")
    ran(session, "production", "r2", "migrate", "2" * 64, "succeeded")
    assert migrationgate.successes(session, app_id, "1" * 64) == {("staging", "expand")}
    assert migrationgate.successes(session, app_id, "2" * 64) == {("production", "expand")}
    assert migrationgate.successes(session, app_id, None) == set()


def test_an_expand_is_refused_until_the_same_hash_succeeded_on_staging(session: Session) -> None:
    r1, r2 = session.get_one(Release, "r1"), session.get_one(Release, "r2")
    expand_passed(session, r1, CONFIG, "staging")  # the first environment: nothing before
    with pytest.raises(GateError, match="has not succeeded on staging"):
        expand_passed(session, r1, CONFIG, "production")
    ran(session, "staging", "r1", "migrate", "1" * 64, "succeeded")
    expand_passed(session, r1, CONFIG, "production")
    # r2's bytes are r1's, its migration is not: r1's success does not stand for it
    with pytest.raises(GateError, match=r"release r2 \(migration 222222222222\)"):
        expand_passed(session, r2, CONFIG, "production")
    r2.migration_hash = None  # built before hashes were recorded: the artifact gate's
    expand_passed(session, r2, CONFIG, "production")


def test_a_contract_waits_for_the_same_contract_to_succeed_on_staging(session: Session) -> None:
    app = session.query(App).one()
    # no host holds an older release (none reports): only the hash gate can hold it
    due = contracting.pending(session, app, "production", serving="r1")
    assert due is not None and due.waiting is not None
    assert "the contract migration of release r1 (migration 111111111111)" in due.waiting
    assert "It runs once the same contract has succeeded on staging" in due.waiting
    ran(session, "staging", "r1", "migrate", "1" * 64, "succeeded")  # an expand: not it
    due = contracting.pending(session, app, "production", serving="r1")
    assert due is not None and due.waiting is not None
    ran(session, "staging", "r1", "contract", "1" * 64, "succeeded")
    due = contracting.pending(session, app, "production", serving="r1")
    assert due is not None and due.waiting is None
    staging = contracting.pending(session, app, "staging", serving="r2")
    assert staging is not None and staging.waiting is None  # staging: nothing before it


def test_a_migrate_step_waits_as_long_as_its_migration_may_run(session: Session) -> None:
    """On top of the start-up time: the hosts converge only once the migration is done."""
    assert parse_config("app: shop\n").migrations.timeout == 3600.0  # the default
    r2 = session.get_one(Release, "r2")
    r2.config = CONFIG.model_copy(
        update={"migrations": CONFIG.migrations.model_copy(update={"timeout": 7200.0})}
    ).model_dump_json()
    session.commit()
    plain = {"s-1": [ReleaseWeight(release="r1", weight=100)]}
    migrating = {
        "s-1": [
            ReleaseWeight(release="r1", weight=100),
            ReleaseWeight(release="r2", weight=0, migrate="expand-7"),
        ]
    }
    assert migration_timeout(session, plain) == 0.0
    assert migration_timeout(session, migrating) == 7200.0
