"""Agents' credentials checked from memory: every enrolled host's digest, read at once.

An agent's every request (a long-poll, a report every 2 s) named its host by a query;
a thousand agents made that hundreds of queries a second. Here one query reads the
digest of every enrolled host, and requests look theirs up in memory. The map is read
again when this process commits a change to a host's state or credential (an enrolment,
a revocation: it takes effect at this server's next request) and at least every
`FRESH` seconds (what another server sharing the database changed: a host revoked
there is refused here within that time). A digest not in the map is looked up in the
database (a host enrolled through another server just now, a user's token).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import HTTPException
from sqlalchemy import event, inspect, select
from sqlalchemy.orm import Session, sessionmaker

from conveyor.store.models import Host, Token

FRESH = 5.0  # seconds a map read is trusted for (another server's revocations)
_KEY = "conveyor.credentials"
_lock = threading.Lock()
_generation = 0  # commits of this process that changed a host's state or credential


def generation() -> int:
    return _generation


def _flushed(session: Session, _context: Any) -> None:
    for obj in (*session.new, *session.deleted):
        if isinstance(obj, Host):
            session.info[_KEY] = True
    for obj in session.dirty:
        if isinstance(obj, Host):
            attrs = inspect(obj).attrs
            if attrs.state.history.has_changes() or attrs.agent_token_hash.history.has_changes():
                session.info[_KEY] = True


def _committed(session: Session) -> None:
    global _generation
    if session.info.pop(_KEY, False):
        with _lock:
            _generation += 1


def _rolled_back(session: Session) -> None:
    session.info.pop(_KEY, None)


event.listen(Session, "after_flush", _flushed)
event.listen(Session, "after_commit", _committed)
event.listen(Session, "after_rollback", _rolled_back)


def enrolled_hosts(session: Session) -> dict[str, str]:
    """Every enrolled host's credential digest, and its name."""
    rows = session.execute(
        select(Host.agent_token_hash, Host.name).where(
            Host.state == "enrolled", Host.agent_token_hash.is_not(None)
        )
    ).all()
    return {str(digest): str(name) for digest, name in rows}


def agent_host(session: Session, digest: str) -> str:
    """The enrolled host whose credential this is, from the database (else 401, or 403
    for a user's token)."""
    host = session.scalar(select(Host).where(Host.agent_token_hash == digest))
    if host is not None and host.state == "enrolled":
        return str(host.name)
    if session.scalar(select(Token).where(Token.token_hash == digest)) is not None:
        raise HTTPException(403, "this route is for agents; user tokens cannot call it")
    raise HTTPException(
        401, "agent credential unknown or revoked: re-enrol with `conveyor host add`"
    )


class AgentCredentials:
    """The digest -> host map of this server, read again when stale (one read at once)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        run: Callable[..., Awaitable[Any]],
        fresh: float = FRESH,
    ) -> None:
        self.sessions, self.run, self.fresh = sessions, run, fresh
        self._hosts: dict[str, str] = {}
        self._read: tuple[int, float] | None = None  # (generation, monotonic) of the read
        self._reading: asyncio.Future[None] | None = None

    def _stale(self) -> bool:
        return (
            self._read is None
            or self._read[0] != generation()
            or time.monotonic() - self._read[1] > self.fresh
        )

    async def host_of(self, digest: str) -> str:
        """The enrolled host of this credential digest (HTTPException 401/403 if none)."""
        while self._stale():
            await self._reread()
        name = self._hosts.get(digest)
        if name is not None:
            return name
        found: str = await self.run(self._lookup, digest)
        self._hosts[digest] = found
        return found

    def _lookup(self, digest: str) -> str:
        with self.sessions() as session:
            return agent_host(session, digest)

    async def _reread(self) -> None:
        loop = asyncio.get_running_loop()
        reading = self._reading
        if reading is None or reading.get_loop() is not loop:
            reading = self._reading = loop.create_task(self._read_all())
        try:
            await asyncio.shield(reading)
        finally:
            if reading.done() and self._reading is reading:
                self._reading = None

    async def _read_all(self) -> None:
        at = (generation(), time.monotonic())  # before reading: a commit meanwhile is seen

        def read() -> dict[str, str]:
            with self.sessions() as session:
                return enrolled_hosts(session)

        self._hosts = await self.run(read)
        self._read = at
