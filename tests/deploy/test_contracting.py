"""Contracts in the records, on a real store: pending and why it waits (the hosts' reports),
a contract deployment created only when it may run, applied ones refusing older releases."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from conveyor.config.loader import parse_config
from conveyor.deploy import contracting
from conveyor.deploy.gates import GateError
from conveyor.deploy.records import create_contracts, create_rollback
from conveyor.protocol import ObservedApp, ObservedRelease, ObservedState, ReleaseWeight
from conveyor.store.db import make_engine, migrate, session_factory
from conveyor.store.models import (
    App,
    Deployment,
    DeploymentStep,
    Host,
    HostApp,
    Release,
    Run,
    utcnow,
)

PLAIN = """
app: shop
service: {start: ./serve, port: 8000}
environments:
  production:
    hosts: [web-1]
"""
CONTRACTING = PLAIN + "migrations: {contract: ./bin/contract}\n"


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
    now = utcnow()
    for i, text in enumerate((PLAIN, CONTRACTING)):
        s.add(
            Release(
                id=f"r{i + 1}",
                app_id=app.id,
                sha="ab" * 20,
                run_id=run.id,
                sha256="0" * 64,
                size=1,
                config=parse_config(text).model_dump_json(),
                created_at=now + timedelta(seconds=i),
            )
        )
        s.add(
            Deployment(
                app_id=app.id,
                environment="production",
                release_id=f"r{i + 1}",
                strategy="rolling",
                trigger="pipeline",
                triggered_by="t",
                state="succeeded",
                finished_at=now + timedelta(seconds=i),
            )
        )
    host = Host(name="web-1", state="enrolled", last_seen=now)
    s.add(host)
    s.flush()
    desired = [ReleaseWeight(release="r2", weight=100).model_dump()]
    s.add(
        HostApp(
            host_id=host.id, app_id=app.id, releases=json.dumps(desired), environment="production"
        )
    )
    s.commit()
    return s


def report(session: Session, **phases: str) -> None:
    """web-1's agent reports these releases of shop in these phases (r2 serving)."""
    releases = [
        ObservedRelease(release=r, phase=p, weight=100 if r == "r2" else 0)  # type: ignore[arg-type]
        for r, p in phases.items()
    ]
    observed = ObservedState(
        host="web-1", generation=1, apps=[ObservedApp(app="shop", releases=releases)]
    )
    host = session.query(Host).one()
    host.observed = observed.model_dump_json()
    session.commit()


def shop(session: Session) -> App:
    return session.query(App).one()


def test_a_contract_waits_while_an_older_release_is_warm_then_is_created_once(
    session: Session,
) -> None:
    report(session, r1="warm", r2="healthy")
    due = contracting.pending(session, shop(session), "production")
    assert due is not None and due.contract.release == "r2"
    assert due.waiting is not None and "release r1 (kept warm on web-1)" in due.waiting
    assert create_contracts(session) == []

    report(session, r1="stopped", r2="healthy")
    due = contracting.pending(session, shop(session), "production")
    assert due is not None and due.waiting is None
    (created,) = create_contracts(session)
    session.commit()
    assert (created.kind, created.release_id, created.state) == ("contract", "r2", "queued")
    assert create_contracts(session) == []  # the environment is busy with it

    created.state = "failed"  # not tried again by itself
    session.commit()
    assert create_contracts(session) == []


def test_an_applied_contract_refuses_a_rollback_to_an_older_release(session: Session) -> None:
    assert contracting.applied(session, shop(session).id, "production") == {}
    d = session.query(Deployment).filter_by(release_id="r2").one()
    targets = {
        "web-1": [ReleaseWeight(release="r2", weight=100, migrate="contract-9").model_dump()]
    }
    d.steps.append(
        DeploymentStep(
            position=0,
            kind="contract",
            name="contract of r2 on web-1",
            targets=json.dumps(targets),
            state="succeeded",
        )
    )
    session.commit()
    assert list(contracting.applied(session, shop(session).id, "production")) == ["r2"]
    assert contracting.pending(session, shop(session), "production") is None
    r1 = session.get_one(Release, "r1")
    with pytest.raises(GateError, match="contract migration of release r2 has been applied"):
        create_rollback(session, shop(session), "production", r1, triggered_by="t")
