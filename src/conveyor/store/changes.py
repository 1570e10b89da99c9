"""What this process wrote, as generations: caches of reads know when they went stale.

Every commit that changed rows bumps the generation of each table it touched (and
the overall one); a cache keeps the generation it read at, and an entry is good
while that generation is still the current one. Only the writes of this process
are seen: a cache that may also see another server's writes keeps its entries for
a short time only.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

ANY = "*"  # the generation of the whole database
_UNKNOWN = "?"  # statements whose table is not known: they count for every table

_lock = threading.Lock()
_generations: Counter[str] = Counter()
_KEY = "conveyor.changed"


def generation(table: str = ANY) -> int:
    """How many commits of this process changed `table` (or anything) so far."""
    return _generations[table] + (_generations[_UNKNOWN] if table != ANY else 0)


def watch(sessions: sessionmaker[Session]) -> None:
    """Count the commits of these sessions that change rows."""
    event.listen(sessions, "after_flush", _flushed)
    event.listen(sessions, "do_orm_execute", _executed)
    event.listen(sessions, "after_commit", _committed)
    event.listen(sessions, "after_rollback", _rolled_back)


def _changed(session: Session) -> set[str]:
    found: set[str] = session.info.setdefault(_KEY, set())
    return found


def _flushed(session: Session, _context: Any) -> None:
    tables = _changed(session)
    # `dirty` is optimistic (any attribute set): only rows whose values changed count
    dirty = [o for o in session.dirty if session.is_modified(o, include_collections=False)]
    for obj in (*session.new, *dirty, *session.deleted):
        table = getattr(obj, "__tablename__", None)
        tables.add(table if isinstance(table, str) else _UNKNOWN)


def _executed(state: ORMExecuteState) -> None:
    if state.is_update or state.is_delete or state.is_insert:
        mapper = state.bind_mapper
        table = getattr(mapper.class_, "__tablename__", None) if mapper is not None else None
        _changed(state.session).add(table if isinstance(table, str) else _UNKNOWN)


def _committed(session: Session) -> None:
    tables = session.info.pop(_KEY, None)
    if not tables:
        return
    with _lock:
        _generations[ANY] += 1
        for table in tables:
            _generations[table] += 1


def _rolled_back(session: Session) -> None:
    session.info.pop(_KEY, None)


__all__ = ["ANY", "generation", "watch"]
