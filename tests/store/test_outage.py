"""The database away (store/outage.py): which errors say so, the loops' waits, one log line.

Errors are real ones: a SQLite file that cannot be opened, a PostgreSQL socket nobody
listens on, a lock waited out; the e2e test (tests/e2e/test_db_loss.py) stops a real
PostgreSQL under a running server.
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from conveyor.store.db import make_engine
from conveyor.store.outage import SETTLE, Outage, backoff, is_busy, is_unavailable


@pytest.mark.parametrize(
    ("attempt", "wait"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 5.0), (50, 5.0)],
)
def test_loops_wait_longer_the_longer_it_lasts(attempt: int, wait: float) -> None:
    assert backoff(attempt) == wait


def error_of(url: str, sql: str = "SELECT 1") -> BaseException:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    except Exception as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("no error")


def test_which_errors_mean_the_database_is_away(tmp_path: Path) -> None:
    nobody = error_of(f"postgresql+psycopg://u@/db?host={tmp_path}")  # no server there
    assert is_unavailable(nobody) and not is_busy(nobody)
    missing = error_of(f"sqlite:///{tmp_path}/no/such/dir/c.db")
    assert is_unavailable(missing)
    bad_sql = error_of(f"sqlite:///{tmp_path}/c.db", "SELECT * FROM nowhere")
    assert not is_unavailable(bad_sql)  # a fault of the statement: a bug, a 500
    assert not is_unavailable(IntegrityError("INSERT", {}, Exception("UNIQUE constraint")))
    locked = DBAPIError("UPDATE", {}, Exception("database is locked"))
    assert is_busy(locked) and not is_unavailable(locked)
    assert is_busy(PoolTimeout()) and not is_unavailable(PoolTimeout())
    assert is_unavailable(psycopg.OperationalError("server closed the connection"))
    assert not is_unavailable(ValueError("a bug"))


def test_an_outage_is_logged_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    outage = Outage(clock=lambda: now[0])
    away = psycopg.OperationalError("connection refused")
    assert outage.health() == {} and not outage.down
    with caplog.at_level(logging.WARNING, logger="conveyor.store"):
        waits = [outage.turn_failed(away, "scheduler") for _ in range(4)]
        waits.append(outage.turn_failed(away, "courier"))
        outage.failed(away, "request")
        assert outage.turn_failed(ValueError("a bug"), "scheduler") is None  # the caller logs
        now[0] += 12
        health = outage.health()
        outage.answered()
        outage.answered()
    assert waits == [0.5, 1.0, 2.0, 4.0, 0.5]  # each loop backs off on its own
    assert [r.getMessage() for r in caplog.records] == ["database unavailable", "database back"]
    assert caplog.records[1].down_for == 12  # type: ignore[attr-defined]
    assert health["status"] == "degraded" and health["database"] == "unavailable"
    assert "(12 s;" in health["detail"], health
    assert not outage.down and outage.health() == {}
    assert outage.settling()  # the others' liveness locks may not be back yet
    now[0] += SETTLE
    assert not outage.settling()
    assert outage.turn_failed(away, "scheduler") == 0.5  # a new outage starts over
