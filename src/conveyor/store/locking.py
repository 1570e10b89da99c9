"""Write transactions that decide from what they read: one writer at a time per app.

A deployment is queued (or a request's answer recorded) after reading what is
already there; two requests reading at once would both decide "nothing queued".
SQLite takes its single write lock before the first read (`BEGIN IMMEDIATE`, which
waits `busy_timeout` for the lock); PostgreSQL takes a transaction-scoped advisory
lock named by the app's id (which, unlike a row lock, also holds for an app being
created or already removed, and waits `lock_timeout`). The unique indexes on
deployments stay the last word either way.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

# the first key of conveyor's advisory locks (the second is the app's id): other users of
# the same database's advisory locks pick other numbers
APP_LOCKS = 0x434F4E56  # "CONV"


def lock_for_writing(session: Session, app_id: int) -> None:
    """Hold the app's write lock until the session's transaction ends (commit or rollback).

    Read what you decide from after it: objects the session loaded before keep the state
    they had then (refresh them).
    """
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        dbapi: Any = conn.connection.dbapi_connection
        # pysqlite opens a transaction only at the first write, and that write took the
        # lock: a session that already wrote is the writer, and may go on
        if not dbapi.in_transaction:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        return
    session.execute(select(func.pg_advisory_xact_lock(APP_LOCKS, app_id)))
