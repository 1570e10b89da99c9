"""A step's detail and log written in one statement each, the same on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from conveyor.store import steps
from conveyor.store.db import make_engine, migrate
from conveyor.store.models import App, Deployment, DeploymentStep, Release, Run


@pytest.fixture
def session(store_url: str) -> Iterator[Session]:
    engine = make_engine(store_url)
    migrate(engine)
    with Session(engine) as session:
        yield session
    engine.dispose()


def a_step(session: Session, detail: dict[str, object]) -> DeploymentStep:
    app = App(name="shop", repo_url="/r.git", webhook_secret="s")
    session.add(app)
    session.flush()
    run = Run(app_id=app.id, sha="abc", trigger="push")
    session.add(run)
    session.flush()
    session.add(Release(id="abc-1", app_id=app.id, sha="abc", run_id=run.id, sha256="0", size=1))
    d = Deployment(
        app_id=app.id,
        environment="production",
        release_id="abc-1",
        strategy="canary",
        trigger="api",
    )
    step = DeploymentStep(position=0, kind="weight", name="10%", detail=json.dumps(detail))
    d.steps.append(step)
    session.add(d)
    session.commit()
    return step


def test_set_detail_sets_its_keys_and_keeps_the_others(session: Session) -> None:
    step = a_step(session, {"generations": {"web-1": 3}, "paused": False, "points": [1, 2]})
    steps.set_detail(session, step.id, {"paused": True, "control": {"actions": []}})
    steps.set_detail(session, step.id, {"judge": None, "note": 'it\'s "quoted" ünïcode'})
    session.commit()
    session.refresh(step)
    assert json.loads(step.detail) == {
        "generations": {"web-1": 3},
        "paused": True,
        "points": [1, 2],
        "control": {"actions": []},
        "judge": None,
        "note": 'it\'s "quoted" ünïcode',
    }


def test_append_log_keeps_the_end(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(steps, "LOG_KEEP", 40)
    step = a_step(session, {})
    steps.append_log(session, step.id, ["first line"])
    steps.append_log(session, step.id, ["second line", "third line"])
    session.commit()
    session.refresh(step)
    assert len(step.log) == 40
    assert step.log.endswith(" third line\n") and " second line\n" in step.log
    assert "first" not in step.log


def test_control_actions_are_read_in_step_order(session: Session) -> None:
    step = a_step(session, {"points": [], "control": {"actions": [{"action": "pause", "by": "a"}]}})
    later = DeploymentStep(
        deployment_id=step.deployment_id,
        position=1,
        kind="weight",
        name="50%",
        detail=json.dumps({"control": {"actions": [{"action": "promote", "by": "b"}]}}),
    )
    plain = DeploymentStep(deployment_id=step.deployment_id, position=2, kind="verify", name="v")
    session.add_all([later, plain])
    session.commit()
    found = steps.control_actions(session, [step.deployment_id, 999])
    assert found == {
        step.deployment_id: [{"action": "pause", "by": "a"}, {"action": "promote", "by": "b"}]
    }
