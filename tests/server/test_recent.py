"""Recent answers: kept while nothing they read changed, one read per key at once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from conveyor.server.recent import STALE_HEADER, Recent
from conveyor.store.db import make_engine, migrate, session_factory
from conveyor.store.models import App
from tests.helpers import wait_for_async


@pytest.fixture
def sessions(store_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(store_url)
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def names(sessions: sessionmaker[Session]) -> bytes:
    with sessions() as session:
        return ",".join(session.scalars(select(App.name).order_by(App.name))).encode()


def add(sessions: sessionmaker[Session], name: str) -> None:
    with sessions() as session:
        session.add(App(name=name, repo_url="/r.git", webhook_secret="s"))
        session.commit()


def test_a_write_shows_at_once_and_others_do_not_matter(sessions: sessionmaker[Session]) -> None:
    recent = Recent(("apps",), fresh_for=60)
    reads = 0

    def read() -> bytes:
        nonlocal reads
        reads += 1
        return names(sessions)

    async def main() -> None:
        add(sessions, "a")
        assert (await recent.answer("", read)).body == b"a"
        assert (await recent.answer("", read)).body == b"a"
        assert reads == 1  # kept
        add(sessions, "b")  # a table the answer reads: read again at once
        assert (await recent.answer("", read)).body == b"a,b"
        assert reads == 2
        with sessions() as session:  # a write elsewhere: still kept
            session.scalars(select(App)).first()
            session.commit()
        assert (await recent.answer("", read)).body == b"a,b"
        assert (await recent.answer("other", read)).body == b"a,b"
        assert reads == 3  # another key is another answer

    asyncio.run(main())


def test_an_answer_expires(sessions: sessionmaker[Session]) -> None:
    recent = Recent(("apps",), fresh_for=0.05)

    async def main() -> None:
        first = await recent.answer("", lambda: b"1")
        time.sleep(0.1)
        second = await recent.answer("", lambda: b"2")
        assert (first.body, second.body) == (b"1", b"2")

    asyncio.run(main())


def test_callers_that_miss_together_share_one_read(sessions: sessionmaker[Session]) -> None:
    recent = Recent(("apps",), fresh_for=60)
    reads = 0
    release = threading.Event()

    def slow() -> bytes:
        nonlocal reads
        reads += 1
        release.wait(10)
        return b"x"

    async def main() -> None:
        waiting = [asyncio.create_task(recent.answer("", slow)) for _ in range(20)]
        await asyncio.sleep(0.2)
        release.set()
        bodies = {bytes(r.body) for r in await asyncio.gather(*waiting)}
        assert bodies == {b"x"}
        assert reads == 1

    asyncio.run(main())


def test_a_waiter_does_not_take_an_answer_older_than_its_write(
    sessions: sessionmaker[Session],
) -> None:
    """A write made while another caller's read runs is seen by the caller who made it."""
    recent = Recent(("apps",), fresh_for=60)
    started, release = threading.Event(), threading.Event()

    def slow_read() -> bytes:
        body = names(sessions)
        started.set()
        release.wait(10)
        return body

    async def main() -> None:
        add(sessions, "a")
        first = asyncio.create_task(recent.answer("", slow_read))
        await asyncio.to_thread(started.wait, 10)
        add(sessions, "b")  # committed after the first read, before the second asks
        second = asyncio.create_task(recent.answer("", lambda: names(sessions)))
        await asyncio.sleep(0.1)
        release.set()
        assert (await first).body == b"a"
        assert (await second).body == b"a,b"

    asyncio.run(main())


def test_past_half_its_time_an_answer_is_given_while_the_next_is_read(
    sessions: sessionmaker[Session],
) -> None:
    recent = Recent(("apps",), fresh_for=2.0)
    reads = 0
    release = threading.Event()

    def read() -> bytes:
        nonlocal reads
        reads += 1
        if reads == 2:
            release.wait(10)  # the read ahead is slow: nobody waits for it
        return str(reads).encode()

    async def main() -> None:
        assert (await recent.answer("", read)).body == b"1"
        await asyncio.sleep(1.1)  # past half of fresh_for
        assert (await recent.answer("", read)).body == b"1"  # given, and the next read starts
        assert (await recent.kept("")) is not None  # the fast path too gets it meanwhile
        await wait_for_async(lambda: reads == 2)
        release.set()
        await wait_for_async(lambda: (a := recent.get("")) is not None and a.body == b"2")
        assert (await recent.answer("", read)).body == b"2"
        assert reads == 2

    asyncio.run(main())


def test_a_write_is_never_hidden_by_a_read_ahead(sessions: sessionmaker[Session]) -> None:
    recent = Recent(("apps",), fresh_for=60)

    async def main() -> None:
        add(sessions, "a")
        assert (await recent.answer("", lambda: names(sessions))).body == b"a"
        add(sessions, "b")
        assert (await recent.kept("")) is None  # the fast path leaves it to a read
        assert (await recent.answer("", lambda: names(sessions))).body == b"a,b"

    asyncio.run(main())


def test_the_database_away_the_last_answer_is_given_saying_so(tmp_path: Path) -> None:
    recent = Recent(("apps",), fresh_for=0.01)
    engine = make_engine(f"sqlite:///{tmp_path}/c.db")
    migrate(engine)
    sessions = session_factory(engine)
    add(sessions, "a")
    gone = make_engine(f"sqlite:///{tmp_path}/gone/c.db")  # its directory does not exist

    def away() -> bytes:
        with gone.connect() as conn:
            conn.execute(select(1))
        return b""

    def broken() -> bytes:
        raise ValueError("a bug")

    async def main() -> None:
        assert (await recent.answer("", lambda: names(sessions))).body == b"a"
        await asyncio.sleep(0.02)  # no longer fresh: read again, which fails
        stale = await recent.answer("", away)
        assert stale.body == b"a" and stale.headers[STALE_HEADER] == "unavailable"
        assert stale.headers["age"] == "0"
        with pytest.raises(ValueError):  # any other error is not the database's absence
            await recent.answer("", broken)
        with pytest.raises(OperationalError):  # nothing kept for that key
            await recent.answer("other", away)

    asyncio.run(main())
    engine.dispose()
    gone.dispose()
