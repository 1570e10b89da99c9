"""GET /api/status reads every app at once: the same answer as one app at a time.

The reference below is what status answered before it read in bulk (one app at a time,
with hosts.placements and deployments.environment_statuses, still what the rest of the
server uses); the records cover each case it distinguishes: runs underway and ended,
several releases, deployments queued, running, ended and succeeded per environment,
hosts with and without the app.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from conveyor.config.loader import parse_config
from conveyor.pipeline.runs import ACTIVE
from conveyor.protocol import AppStatus
from conveyor.server.api.environments import environment_statuses
from conveyor.server.api.hosts import placements
from conveyor.server.api.status import status
from conveyor.server.auth import Caller
from conveyor.server.views import app_out, release_out, run_out
from conveyor.store.db import make_engine, migrate, session_factory
from conveyor.store.models import (
    App,
    Deployment,
    DeploymentStep,
    Host,
    HostApp,
    Release,
    Run,
    Step,
    utcnow,
)

CALLER = Caller(1, "t", "viewer")
CONFIG = """
app: shop
service: {start: ./serve, port: 8000}
environments:
  staging:
    hosts: [web-3]
  production:
    hosts: [web-1, web-2]
    strategy: rolling
"""


def one_at_a_time(session: Session, app: str | None = None) -> list[AppStatus]:
    apps = (
        [session.scalars(select(App).where(App.name == app)).one()]
        if app is not None
        else list(session.scalars(select(App).order_by(App.name)).all())
    )
    out = []
    for a in apps:
        hosts = placements(session, a)
        active = session.scalars(
            select(Run).where(Run.app_id == a.id, Run.state.in_(ACTIVE)).order_by(Run.id)
        ).all()
        last = session.scalar(
            select(Run)
            .where(Run.app_id == a.id, Run.state.not_in(ACTIVE))
            .order_by(Run.id.desc())
            .limit(1)
        )
        release = session.scalar(
            select(Release)
            .where(Release.app_id == a.id)
            .order_by(Release.created_at.desc())
            .limit(1)
        )
        out.append(
            AppStatus(
                app=app_out(a),
                active_runs=[run_out(r, steps=True) for r in active],
                last_run=run_out(last) if last else None,
                last_release=release_out(release) if release else None,
                hosts=hosts,
                environments=environment_statuses(session, a, hosts),
            )
        )
    return out


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    migrate(engine)
    made = session_factory(engine)
    config = parse_config(CONFIG).model_dump_json()
    now = utcnow()
    with made() as session:
        hosts = [Host(name=f"web-{i}", state="enrolled", last_seen=now) for i in (2, 1, 3)]
        session.add_all(hosts)
        for n, name in enumerate(("shop", "books", "empty", "blog")):
            app = App(name=name, repo_url=f"/{name}.git", webhook_secret="s")
            session.add(app)
            session.flush()
            if name == "empty":
                continue
            runs = []
            for i, state in enumerate(("succeeded", "failed", "running", "queued")):
                run = Run(app_id=app.id, sha=f"{n}{i}" * 4, trigger="push", state=state)
                run.steps = [Step(position=p, kind="test", name=f"s{p}") for p in (1, 0)]
                session.add(run)
                runs.append(run)
            session.flush()
            for i in range(2):
                session.add(
                    Release(
                        id=f"{name}-r{i}",
                        app_id=app.id,
                        sha="ab" * 20,
                        run_id=runs[0].id,
                        sha256="0" * 64,
                        size=10,
                        config=config,
                        created_at=now + timedelta(seconds=i),
                    )
                )
            session.flush()
            if name == "blog":
                continue  # releases, no deployment, no host
            for host in hosts[: 2 if name == "shop" else 1]:
                releases = [{"release": f"{name}-r1", "weight": 100}]
                session.add(HostApp(host_id=host.id, app_id=app.id, releases=json.dumps(releases)))
            states = [
                ("staging", "succeeded", 1),
                ("staging", "succeeded", 2),
                ("staging", "failed", 3),
                ("production", "succeeded", 4),
                ("production", "running", None),
                ("production", "queued", None),
            ]
            for env, state, finished in states:
                d = Deployment(
                    app_id=app.id,
                    environment=env,
                    release_id=f"{name}-r{(finished or 0) % 2}",
                    strategy="rolling",
                    trigger="release",
                    state=state,
                    previous=json.dumps(["web-1"]),
                    finished_at=now + timedelta(seconds=finished) if finished else None,
                )
                d.steps = [
                    DeploymentStep(position=0, kind="switch", name="switch", state="succeeded"),
                    DeploymentStep(position=1, kind="monitor", name="watch", state="running"),
                ]
                session.add(d)
                session.flush()
        session.commit()
    return made


@pytest.mark.parametrize("app", [None, "shop", "empty"])
def test_every_app_at_once_answers_as_one_at_a_time(
    sessions: sessionmaker[Session], app: str | None
) -> None:
    with sessions() as session:
        expected = one_at_a_time(session, app)
    with sessions() as session:
        got = status(CALLER, session, app)
    assert [a.app.name for a in got] == [a.app.name for a in expected]
    assert got == expected
    # the records cover what they should: an environment deploying, one that ended, hosts
    deploying = [e for a in got for e in a.environments if e.deployment and e.last and e.hosts]
    assert deploying or app == "empty"


def test_a_dozen_queries_whatever_the_number_of_apps(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        engine = session.get_bind()
        queries = 0

        def count(*_: object) -> None:
            nonlocal queries
            queries += 1

        event.listen(engine, "before_cursor_execute", count)
        try:
            status(CALLER, session)
        finally:
            event.remove(engine, "before_cursor_execute", count)
    assert queries <= 12, queries
