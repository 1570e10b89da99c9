"""The hosts' flags of an environment, on a real store: read once for every host until a
flag changes, a guarded rollout starts or ends, or a new release comes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from conveyor.config.loader import parse_config
from conveyor.deploy.flagstate import host_flags
from conveyor.protocol.flags import FlagState
from conveyor.store import flags as store
from conveyor.store.db import make_engine, migrate, session_factory
from conveyor.store.models import App, FlagRollout, Release, Run, utcnow

CONFIG = """
app: shop
service: {{start: ./serve, port: 8000}}
environments:
  production:
    hosts: [p-1]
flags:
  {stickiness}
  declare:
    - name: checkout
"""


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    migrate(engine)
    made: sessionmaker[Session] = session_factory(engine)
    with made() as s:
        app = App(name="shop", repo_url="/shop.git", webhook_secret="s")
        s.add(app)
        s.flush()
        s.add(Run(app_id=app.id, sha="ab" * 20, trigger="push", state="succeeded"))
        s.flush()
        _release(s, "r1", "stickiness: cookie:uid")
        yield s


def _release(s: Session, name: str, stickiness: str) -> None:
    app = s.query(App).one()
    run = s.query(Run).one()
    count = s.query(Release).count()
    config = parse_config(CONFIG.format(stickiness=stickiness))
    s.add(
        Release(
            id=name,
            app_id=app.id,
            sha="ab" * 20,
            run_id=run.id,
            sha256="0" * 64,
            size=1,
            config=config.model_dump_json(),
            created_at=utcnow() + timedelta(seconds=count),
        )
    )
    s.commit()


def _enabled(session: Session) -> bool:
    flags = host_flags(session, session.query(App).one(), "production")
    assert flags is not None
    return next(f.enabled for f in flags.document.features if f.name == "checkout")


def test_the_hosts_flags_are_read_once_until_something_they_are_made_of_changes(
    session: Session,
) -> None:
    app = session.query(App).one()
    first = host_flags(session, app, "production")
    assert first is not None and first.stickiness == "cookie:uid" and first.guarded == []
    assert host_flags(session, app, "production") is first  # every host: the same, read once
    assert not _enabled(session)

    # a change of the flag (the kill switch's way too)
    [entry] = store.catalog([store.Declared("checkout", "", [])], [])
    row = store.save(session, app.id, "production", entry, FlagState(enabled=True), "me")
    session.commit()
    assert _enabled(session)

    # a guarded rollout starts: the hosts count the flag's answers; it ends: they stop
    rollout = FlagRollout(steps="[5,100]", step_pause=1.0, step=0, started_by="me")
    row.rollouts.append(rollout)
    session.commit()
    guarded = host_flags(session, app, "production")
    assert guarded is not None and guarded.guarded == ["checkout"]
    rollout.state = "completed"  # no line of history: the rollouts' count says it
    session.commit()
    ended = host_flags(session, app, "production")
    assert ended is not None and ended.guarded == []

    # a new release without flags.stickiness: the routers evaluate nothing
    _release(session, "r2", "")
    assert host_flags(session, app, "production") is None
    assert host_flags(session, app, None) is None
