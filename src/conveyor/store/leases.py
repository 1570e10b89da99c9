"""Leases: one server drives each running deployment (and run), fenced by a generation.

Several servers may share one PostgreSQL database. A deployment is driven by the
server that holds its lease row (holder, generation, expiry by the database's
clock). The holder renews it every few seconds; another server takes it over when
it has expired, or at once when the holder's liveness lock (store/cluster.py) is
gone, that is when its process died. A takeover adds one to the generation.

Fencing: each transaction a driver commits first locks the lease row and checks
that it still holds it at its generation (`fenced` + the sessions' before_commit
hook below); a holder frozen past its expiry (SIGSTOP, a long GC, a VM pause) and
resumed after another server took over fails that check, rolls back and stops:
it never writes over the new holder's decisions.

On SQLite there is one server and no lease is ever written.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import delete, event, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from conveyor.store.models import Lease

TTL = 10.0  # seconds a lease lasts unless renewed
RENEW_EVERY = 2.0  # seconds between two renewals by its holder


class LeaseLost(Exception):
    """Another server took over what this one was driving: stop, write nothing."""


@dataclass(frozen=True)
class Holder:
    """A server as a lease holder: its name (shown) and its liveness lock's number."""

    name: str
    server: int


@dataclass(frozen=True)
class Held:
    kind: str
    key: int
    holder: str
    generation: int


Move = Literal["keep", "take", "wait"]


def decide(
    row_holder: str | None,
    expires_at: datetime | None,
    holder_alive: bool,
    me: str,
    now: datetime,
) -> Move:
    """What a server does about a lease it would like: keep it (its own, unexpired), take
    it (free, expired, or its holder is dead), or wait (another live server holds it).

    Its own lease expired is taken anew too (the generation goes up): its driver stopped
    when it could not renew it (the database away for the whole TTL), and whatever that
    driver still had under way must be fenced off from the one that starts now."""
    expired = expires_at is not None and expires_at <= now
    if row_holder is None:
        return "take"
    if row_holder == me:
        return "take" if expired else "keep"
    if not holder_alive or expired:
        return "take"
    return "wait"


def _now(session: Session) -> datetime:
    # the database's clock, as naive UTC (the sessions speak UTC: store/db.py)
    found = session.scalar(select(func.localtimestamp()))
    assert isinstance(found, datetime)
    return found


def claim(
    session: Session,
    kind: str,
    key: int,
    me: Holder,
    alive: Callable[[Session, Collection[int]], set[int]],
) -> Held | None:
    """Take or keep the lease of `kind` `key` for `me` (committed); None: another holds it.

    `alive(session, servers)`: which of these liveness locks are held now.
    """
    now = _now(session)
    expires = now + timedelta(seconds=TTL)
    row = session.scalar(
        select(Lease).where(Lease.kind == kind, Lease.key == key).with_for_update(skip_locked=True)
    )
    if row is None:
        # free, or locked by a server renewing or taking it right now (SKIP LOCKED)
        inserted = session.execute(
            insert(Lease)
            .values(kind=kind, key=key, holder=me.name, server=me.server, generation=1)
            .values(expires_at=expires)
            .on_conflict_do_nothing()
            .returning(Lease.generation)
        ).scalar()
        session.commit()
        return Held(kind, key, me.name, 1) if inserted is not None else None
    living = row.server in alive(session, [row.server])
    move = decide(row.holder, row.expires_at, living, me.name, now)
    if move == "wait":
        session.rollback()
        return None
    if move == "take":
        row.generation += 1
        row.holder, row.server = me.name, me.server
    row.expires_at = expires
    generation = row.generation
    session.commit()
    return Held(kind, key, me.name, generation)


def renew(session: Session, held: Held) -> bool:
    """Push the lease's expiry on, if it is still ours at our generation (committed)."""
    now = _now(session)
    done = session.execute(
        update(Lease)
        .where(
            Lease.kind == held.kind,
            Lease.key == held.key,
            Lease.holder == held.holder,
            Lease.generation == held.generation,
        )
        .values(expires_at=now + timedelta(seconds=TTL))
    )
    session.commit()
    return bool(getattr(done, "rowcount", 0))


def release(session: Session, held: Held) -> None:
    """Give the lease up (the deployment or run ended), if it is still ours (the delete
    says so itself: no fence check, which would find the row gone)."""
    token = _fence.set(None)
    try:
        _delete(session, held)
    finally:
        _fence.reset(token)


def _delete(session: Session, held: Held) -> None:
    session.execute(
        delete(Lease).where(
            Lease.kind == held.kind,
            Lease.key == held.key,
            Lease.holder == held.holder,
            Lease.generation == held.generation,
        )
    )
    session.commit()


def holders(session: Session, kind: str) -> dict[int, tuple[str, int, datetime]]:
    """Every lease of a kind: key -> (holder, server, expires_at)."""
    rows = session.execute(
        select(Lease.key, Lease.holder, Lease.server, Lease.expires_at).where(Lease.kind == kind)
    ).all()
    return {key: (holder, server, at) for key, holder, server, at in rows}


# -- fencing ------------------------------------------------------------------

_fence: contextvars.ContextVar[Held | None] = contextvars.ContextVar("lease_fence", default=None)


@contextlib.contextmanager
def fenced(held: Held | None) -> Iterator[None]:
    """Every commit in this context (its threads too) first checks that `held` still is."""
    token = _fence.set(held)
    try:
        yield
    finally:
        _fence.reset(token)


def current() -> Held | None:
    return _fence.get()


def check(session: Session, held: Held) -> None:
    """Lock the lease row until the transaction ends; LeaseLost unless it is still ours."""
    row = session.execute(
        select(Lease.holder, Lease.generation)
        .where(Lease.kind == held.kind, Lease.key == held.key)
        .with_for_update()
    ).first()
    if row is None or (row[0], row[1]) != (held.holder, held.generation):
        raise LeaseLost(
            f"{held.kind} {held.key}: lease generation {held.generation} of {held.holder} "
            f"superseded by {row[1] if row else 'none'} of {row[0] if row else 'nobody'}"
        )


def _before_commit(session: Session) -> None:
    held = _fence.get()
    if held is not None and session.get_bind().dialect.name == "postgresql":
        check(session, held)


def watch(sessions: sessionmaker[Session]) -> None:
    """Install the fence on these sessions' commits."""
    event.listen(sessions, "before_commit", _before_commit)


__all__ = [
    "RENEW_EVERY",
    "TTL",
    "Held",
    "Holder",
    "LeaseLost",
    "claim",
    "decide",
    "fenced",
    "holders",
    "release",
    "renew",
    "watch",
]
