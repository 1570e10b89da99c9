"""Migrations only go forward: a database a newer conveyor migrated is refused, clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from conveyor import __version__
from conveyor.store.db import SchemaTooNew, make_engine, migrate, unknown_revisions


def _stamp_future(url: str) -> None:
    engine = make_engine(url)
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    engine.dispose()


def test_a_current_database_migrates_again_without_complaint(bare_store_url: str) -> None:
    engine = make_engine(bare_store_url)
    migrate(engine)
    migrate(engine)
    with engine.connect() as conn:
        assert unknown_revisions(conn) == []
    engine.dispose()


def test_a_database_stamped_by_a_newer_conveyor_is_refused(bare_store_url: str) -> None:
    _stamp_future(bare_store_url)
    engine = make_engine(bare_store_url)
    with pytest.raises(SchemaTooNew) as refused:
        migrate(engine)
    engine.dispose()
    said = str(refused.value)
    assert "0099_from_the_future" in said
    assert __version__ in said
    assert "never run backwards" in said


def test_the_server_exits_1_on_a_database_from_a_newer_conveyor(
    tmp_path: Path, bare_store_url: str
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    _stamp_future(bare_store_url)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor",
            "server",
            "--data",
            str(data),
            "--listen",
            "127.0.0.1:9",
            "--db",
            bare_store_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CONVEYOR_ADMIN_TOKEN": "cvy_" + "a" * 40},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "conveyor server: the database" in done.stderr
    assert "0099_from_the_future" in done.stderr
    assert "Traceback" not in done.stderr
