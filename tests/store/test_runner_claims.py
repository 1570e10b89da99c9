"""Runs handed to runners, on each engine (pipeline/handoff.py): one claim wins, a
heartbeat keeps the run, a lost runner costs one retry, then the run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from conveyor.pipeline import handoff
from conveyor.pipeline.runs import recover_runs
from conveyor.store.db import make_engine, migrate, session_factory
from conveyor.store.models import App, Run, Step, utcnow


@pytest.fixture
def sessions(store_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(store_url)
    migrate(engine)
    try:
        yield session_factory(engine)
    finally:
        engine.dispose()


def _handed_off(sessions: sessionmaker[Session], labels: list[str]) -> int:
    with sessions() as session:
        app = App(name="shop", repo_url="r", branch="main", webhook_secret="s")
        session.add(app)
        session.flush()
        run = Run(app_id=app.id, sha="a" * 40, trigger="manual", state="running")
        session.add(run)
        session.flush()
        session.add(Step(run_id=run.id, position=1, kind="test", name="t", state="running"))
        handoff.hand_off(session, run, {"labels": labels, "steps": []})
        session.commit()
        return run.id


def test_claims_heartbeats_and_lost_runners(sessions: sessionmaker[Session]) -> None:
    run_id = _handed_off(sessions, ["big"])
    with sessions() as session:
        assert session.get_one(Run, run_id).reason == (
            "waiting for a runner with labels big (none is up)"
        )
        handoff.seen(session, "small", [], None)
        assert handoff.claim(session, "small", []) is None  # its labels do not fit
        taken = handoff.claim(session, "big-1", ["big"])
        assert taken is not None and taken.runner == "big-1"
        assert handoff.claim(session, "big-2", ["big"]) is None  # taken once
        # a server restarting leaves a runner's run alone (no server runs it)
        assert recover_runs(session) == []
        assert handoff.heartbeat(session, run_id, "big-1", 1)
        assert not handoff.heartbeat(session, run_id, "big-2", 1)
        assert handoff.lost_runs(session) == []  # its heartbeat holds it
        # a server that was down gives it a whole heartbeat period again as it starts
        session.get_one(Run, run_id).runner_expires_at = utcnow() - timedelta(seconds=60)
        session.commit()
        assert handoff.grace(session) == 1
        session.commit()
        assert handoff.lost_runs(session) == []
        later = utcnow() + timedelta(seconds=handoff.HEARTBEAT_TTL + 1)
        lost = handoff.lost_runs(session, later)
        session.commit()
        assert [r.id for r in lost] == [run_id]
    with sessions() as session:
        run = session.get_one(Run, run_id)
        assert (run.state, run.attempt, run.handoff, run.runner) == ("queued", 2, None, None)
        assert [s.state for s in run.steps] == ["interrupted"]
        assert not handoff.heartbeat(session, run_id, "big-1", 1)  # the old claim is gone
        # attempt 2, handed off again and lost again: the run fails with the reason
        run.state = "running"
        handoff.hand_off(session, run, {"labels": [], "steps": []})
        session.commit()
        assert handoff.claim(session, "big-2", ["big"]) is not None
        lost = handoff.lost_runs(session, utcnow() + timedelta(seconds=60))
        session.commit()
        run = session.get_one(Run, run_id)
        assert run.state == "failed"
        assert run.reason is not None and "runner big-2 stopped answering" in run.reason
