"""Write generations: which commits count as a change of which table."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from conveyor.store import changes
from conveyor.store.db import make_engine, migrate, session_factory
from conveyor.store.models import App, Token


@pytest.fixture
def sessions(store_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(store_url)
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def add_app(session: Session) -> None:
    session.add(App(name="shop", repo_url="/r.git", webhook_secret="s"))
    session.commit()


def rename_app(session: Session) -> None:
    session.scalars(select(App)).one().branch = "release"
    session.commit()


def set_same_branch(session: Session) -> None:
    app = session.scalars(select(App)).one()
    app.branch = app.branch  # an attribute set, no change
    session.commit()


def read_only(session: Session) -> None:
    session.scalars(select(App)).all()
    session.commit()


def rolled_back(session: Session) -> None:
    session.add(Token(name="t", role="viewer", token_hash="h"))
    session.flush()
    session.rollback()


def bulk_delete(session: Session) -> None:
    session.execute(delete(Token).where(Token.name == "nobody"))
    session.commit()


@pytest.mark.parametrize(
    ("change", "apps", "tokens"),
    [
        (rename_app, 1, 0),
        (set_same_branch, 0, 0),
        (read_only, 0, 0),
        (rolled_back, 0, 0),
        (bulk_delete, 0, 1),
    ],
)
def test_generations(
    sessions: sessionmaker[Session], change: Callable[[Session], None], apps: int, tokens: int
) -> None:
    with sessions() as session:
        add_app(session)
    before = changes.generation("apps"), changes.generation("tokens"), changes.generation()
    with sessions() as session:
        change(session)
    after = changes.generation("apps"), changes.generation("tokens"), changes.generation()
    assert (after[0] - before[0], after[1] - before[1]) == (apps, tokens)
    assert after[2] - before[2] == (1 if apps or tokens else 0)
