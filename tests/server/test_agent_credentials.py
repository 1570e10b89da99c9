"""Agents' credentials checked from memory (server/credentials.py), on a real store: a
revocation committed by this process takes effect at the next request; one made by
another server (a write this process did not make) once the map is `fresh` seconds old."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from fastapi import HTTPException
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from conveyor.server.auth import hash_token
from conveyor.server.credentials import AgentCredentials
from conveyor.store.db import make_engine, migrate, session_factory
from conveyor.store.models import Host, Token


@pytest.fixture
def store(store_url: str) -> Iterator[tuple[Engine, sessionmaker[Session]]]:
    engine = make_engine(store_url)
    migrate(engine)
    made = session_factory(engine)
    with made() as s:
        for name in ("a", "b"):
            s.add(Host(name=name, state="enrolled", agent_token_hash=hash_token(f"t-{name}")))
        s.add(Token(name="ops", role="admin", token_hash=hash_token("user")))
        s.commit()
    yield engine, made
    engine.dispose()


async def run_inline(fn: object, *args: object) -> object:
    return await asyncio.to_thread(fn, *args)  # type: ignore[arg-type]


async def status(credentials: AgentCredentials, token: str) -> int | str:
    try:
        return await credentials.host_of(hash_token(token))
    except HTTPException as exc:
        return exc.status_code


def test_revocation_here_takes_effect_at_once_and_another_servers_within_fresh(
    store: tuple[Engine, sessionmaker[Session]],
) -> None:
    engine, sessions = store

    async def main() -> None:
        credentials = AgentCredentials(sessions, run_inline, fresh=0.5)
        assert await status(credentials, "t-a") == "a"
        assert await status(credentials, "t-b") == "b"
        assert await status(credentials, "user") == 403  # a user's token: not an agent
        assert await status(credentials, "nothing") == 401
        # revoked through this process (the route does this): refused at the next request
        with sessions() as s:
            host = s.query(Host).filter_by(name="a").one()
            host.state, host.agent_token_hash = "revoked", None
            s.commit()
        assert await status(credentials, "t-a") == 401
        # revoked by another server: a write this process's sessions did not make
        with engine.begin() as conn:
            conn.execute(text("UPDATE hosts SET state = 'revoked' WHERE name = 'b'"))
        started = time.monotonic()
        while await status(credentials, "t-b") == "b":
            assert time.monotonic() - started < 30, "another server's revocation never seen"
            await asyncio.sleep(0.05)
        # enrolled through another server: found in the database on the first request
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE hosts SET state = 'enrolled', agent_token_hash = :h WHERE name='a'"),
                {"h": hash_token("t-a2")},
            )
        assert await status(credentials, "t-a2") == "a"

    asyncio.run(main())


def test_a_thousand_requests_at_once_read_the_map_once(
    store: tuple[Engine, sessionmaker[Session]],
) -> None:
    reads = 0

    async def counting(fn: object, *args: object) -> object:
        nonlocal reads
        reads += 1
        return await run_inline(fn, *args)

    async def main() -> None:
        credentials = AgentCredentials(store[1], counting)
        found = await asyncio.gather(*(status(credentials, "t-b") for _ in range(1000)))
        assert found == ["b"] * 1000
        assert reads == 1

    asyncio.run(main())
