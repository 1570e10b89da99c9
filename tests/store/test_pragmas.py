"""The SQLite connections the server opens: WAL, and every commit on disk before it returns."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from conveyor.store.db import make_engine


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
