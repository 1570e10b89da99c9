"""The connections the server opens: on SQLite WAL, and every commit on disk before it
returns; on PostgreSQL a bounded wait for locks, in UTC."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from conveyor.store.db import Pool, database_url, make_engine


def test_sqlite_is_wal_with_full_sync_and_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'conveyor.db'}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            # FULL (2): a commit the server acted on survives a power loss (README, bench/)
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 2
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()


@pytest.mark.postgresql
def test_postgresql_waits_lock_wait_for_a_lock_and_speaks_utc(pg_database: str) -> None:
    engine = make_engine(database_url(pg_database, Path()), Pool(size=1, lock_wait=2.5))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW lock_timeout")).scalar() == "2500ms"
            assert conn.execute(text("SHOW timezone")).scalar() == "UTC"
    finally:
        engine.dispose()
