"""Queueing: rows in the caller's transaction, one per target per happening, secrets masked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from conveyor.config import parse_config
from conveyor.notify import Announcer
from conveyor.sealing import Sealer
from conveyor.store.db import make_engine, migrate, session_factory
from conveyor.store.models import (
    App,
    Deployment,
    DeploymentStep,
    Notification,
    Release,
    Run,
    Step,
)
from conveyor.store.secrets import set_secret

SECRET = "hunter2-database-password"
CONFIG = """
app: shop
service: {start: ./run, port: 8000}
environments:
  production:
    hosts: [web-1, web-2]
    approval: required
notify:
  - url: json://127.0.0.1:9/default
  - url: json://127.0.0.1:9/all
    on: [failure, rollback, approval, success]
  - url: json://127.0.0.1:9/rollbacks
    on: [rollback]
"""


@pytest.fixture
def sessions(store_url: str, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(store_url)
    migrate(engine)
    sessions = session_factory(engine)
    sessions.configure(info={"sealer": Sealer.open_or_create(tmp_path / "secrets.key")})
    yield sessions
    engine.dispose()


@pytest.fixture
def announcer(tmp_path: Path) -> Announcer:
    return Announcer("http://ci.example/", tmp_path, lambda run: tmp_path / f"work/run-{run}")


def seed(session: Session, config: str = CONFIG) -> tuple[App, Run, Release]:
    app = App(name="shop", repo_url="/repo", webhook_secret="x")
    session.add(app)
    session.flush()
    set_secret(session, app, "DATABASE_URL", None, SECRET, "value")
    run = Run(app_id=app.id, sha="1a2b3c4d5e6f" * 3, trigger="push", state="succeeded")
    session.add(run)
    session.flush()
    release = Release(
        id="1a2b3c4-1",
        app_id=app.id,
        sha=run.sha,
        run_id=run.id,
        sha256="0" * 64,
        size=1,
        config=parse_config(config).model_dump_json(),
    )
    session.add(release)
    session.flush()
    return app, run, release


def rows(session: Session) -> list[tuple[str, str, str]]:
    found = session.scalars(select(Notification).order_by(Notification.id)).all()
    return [(n.key, n.event, n.target.rsplit("/", 1)[-1]) for n in found]


def failed_deployment(session: Session, app: App, run: Run, release: Release) -> Deployment:
    d = Deployment(
        app_id=app.id,
        environment="production",
        release_id=release.id,
        run_id=run.id,
        strategy="rolling",
        trigger="pipeline",
        state="rolling_back",
        previous_release="0f0f0f0-1",
        touched=json.dumps(["web-1", "web-2"]),
        reason=f"verify failed: could not connect to postgres://app:{SECRET}@db",
    )
    d.steps.append(DeploymentStep(position=0, kind="batch", name="batch 1/1", state="failed"))
    d.steps.append(
        DeploymentStep(
            position=1,
            kind="rollback",
            name="roll back",
            state="succeeded",
            targets=json.dumps({"web-1": [], "web-2": []}),
        )
    )
    session.add(d)
    session.flush()
    return d


def test_an_automatic_rollback_is_one_message_per_target_whatever_it_subscribed_to(
    sessions: sessionmaker[Session], announcer: Announcer
) -> None:
    with sessions() as session:
        app, run, release = seed(session)
        d = failed_deployment(session, app, run, release)
        d.state = "failed"
        announcer.deployment_ended(d)
        announcer.deployment_ended(d)  # the same end seen twice (a retried transaction)
        session.commit()
        key = f"deployment:{d.id}:end"
        assert rows(session) == [
            (key, "failure,rollback", "default"),
            (key, "failure,rollback", "all"),
            (key, "failure,rollback", "rollbacks"),
        ]
        for n in session.scalars(select(Notification)):
            assert SECRET not in n.body and "***" in n.body, n.body
            assert n.deployment_id == d.id and n.run_id == run.id and n.app_id == app.id
            assert n.state == "pending" and n.attempts == 0
            assert n.body.endswith(f"Link: http://ci.example/deployments/{d.id}")


def test_rows_go_with_the_transaction_that_ends_the_deployment(
    sessions: sessionmaker[Session], announcer: Announcer
) -> None:
    with sessions() as session:
        app, run, release = seed(session)
        session.commit()
        d = failed_deployment(session, app, run, release)
        d.state = "failed"
        announcer.deployment_ended(d)
        session.rollback()  # the change did not happen: neither did its message
        assert rows(session) == []


def test_approval_is_announced_once_and_only_while_unapproved(
    sessions: sessionmaker[Session], announcer: Announcer
) -> None:
    with sessions() as session:
        app, run, release = seed(session)
        d = Deployment(
            app_id=app.id,
            environment="production",
            release_id=release.id,
            run_id=run.id,
            strategy="rolling",
            trigger="pipeline",
            state="waiting",
            reason=f"waiting for approval: conveyor approve {run.id}",
        )
        session.add(d)
        session.flush()
        announcer.deployment_waiting(d)
        session.commit()
        announcer.deployment_waiting(d)  # waiting again after a spell in the queue
        session.commit()
        assert rows(session) == [(f"deployment:{d.id}:approval", "approval", "all")]
        body = session.scalars(select(Notification.body)).one()
        assert f"conveyor approve {run.id}" in body and "hosts web-1, web-2" in body

        d.approved_by, d.reason = "admin", "waiting for the deployment window"
        session.execute(Notification.__table__.delete())
        announcer.deployment_waiting(d)  # approved, now waiting for the window: no message
        session.commit()
        assert rows(session) == []


@pytest.mark.parametrize(
    ("state", "kind", "expected"),
    [
        ("succeeded", "deploy", [("success", "all")]),
        (
            "succeeded",
            "rollback",
            [("rollback,success", t) for t in ("all", "default", "rollbacks")],
        ),
        ("cancelled", "deploy", []),
        ("superseded", "deploy", []),
    ],
)
def test_who_hears_of_an_end(
    sessions: sessionmaker[Session],
    announcer: Announcer,
    state: str,
    kind: str,
    expected: list[tuple[str, str]],
) -> None:
    with sessions() as session:
        app, _, release = seed(session)
        d = Deployment(
            app_id=app.id,
            environment="production",
            release_id=release.id,
            kind=kind,
            strategy="rolling",
            trigger="manual",
            state=state,
            touched=json.dumps(["web-1"]),
        )
        session.add(d)
        session.flush()
        announcer.deployment_ended(d)
        session.commit()
        assert sorted((event, target) for _, event, target in rows(session)) == expected


def test_a_failed_run_reads_the_checked_out_config_and_masks_its_log_tail(
    sessions: sessionmaker[Session], announcer: Announcer, tmp_path: Path
) -> None:
    with sessions() as session:
        app, _, _ = seed(session, "app: shop\n")  # the last release told nobody
        failing = Run(app_id=app.id, sha="abcdef0" * 6, trigger="push", state="running")
        session.add(failing)
        session.flush()
        workspace = tmp_path / f"work/run-{failing.id}"
        workspace.mkdir(parents=True)
        (workspace / "conveyor.yml").write_text(CONFIG)
        log = tmp_path / "logs/test.log"
        log.parent.mkdir(parents=True)
        log.write_text("".join(f"line {i}\n" for i in range(30)) + f"token was {SECRET}\n")
        failing.steps.append(
            Step(
                position=1,
                kind="test",
                name="unit tests",
                state="failed",
                reason="test step 'unit tests' failed (exit 1)",
                log_path="logs/test.log",
            )
        )
        session.flush()
        failing.state, failing.reason = "failed", "test step 'unit tests' failed (exit 1)"
        announcer.run_ended(session, failing)
        session.commit()
        assert rows(session) == [
            (f"run:{failing.id}:1:end", "failure", "default"),
            (f"run:{failing.id}:1:end", "failure", "all"),
        ]
        body = session.scalars(select(Notification.body)).first()
        assert body is not None
        assert "line 29" in body and "line 19" not in body  # the last ten lines
        assert SECRET not in body and "token was ***" in body
        assert f"Link: http://ci.example/runs/{failing.id}" in body


def test_a_broken_conveyor_yml_still_reaches_whom_the_app_told_last(
    sessions: sessionmaker[Session], announcer: Announcer
) -> None:
    with sessions() as session:
        app, _, _ = seed(session)
        failing = Run(app_id=app.id, sha="abcdef0" * 6, trigger="push", state="failed")
        failing.reason = "conveyor.yml is invalid"
        session.add(failing)
        session.flush()
        announcer.run_ended(session, failing)  # no checkout on disk: the last release's list
        session.commit()
        assert [target for *_, target in rows(session)] == ["default", "all"]


def test_a_bug_in_a_message_never_fails_the_change(
    sessions: sessionmaker[Session], announcer: Announcer
) -> None:
    with sessions() as session:
        app, run, release = seed(session)
        d = failed_deployment(session, app, run, release)
        d.state, d.touched = "failed", "not json"
        announcer.deployment_ended(d)  # logs the error, raises nothing
        session.commit()
        assert rows(session) == []
        assert session.get_one(Deployment, d.id).state == "failed"
