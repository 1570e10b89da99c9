"""The write lock: requests that read, then decide, then write take their turns."""

from __future__ import annotations

import threading
import time

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conveyor.store.db import make_engine, migrate
from conveyor.store.locking import lock_for_writing
from conveyor.store.models import Token


def test_deciders_that_read_first_take_turns_and_see_each_other(store_url: str) -> None:
    engine = make_engine(store_url)
    migrate(engine)
    errors: list[BaseException] = []

    def decide(n: int) -> None:
        try:
            with Session(engine) as session:
                session.scalar(select(Token.id).limit(1))  # a read before, as routes do
                lock_for_writing(session, 1)
                taken = session.scalar(select(func.count()).where(Token.name == "only"))
                time.sleep(0.05)  # the moment another decider would slip in without the lock
                if not taken:
                    session.add(Token(name="only", role="admin", token_hash=f"h{n}"))
                session.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=decide, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with Session(engine) as session:
        names = session.scalars(select(Token.name)).all()
    engine.dispose()
    assert errors == []
    assert names == ["only"]
