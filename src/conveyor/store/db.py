"""Opening the database: SQLite (WAL) by default, PostgreSQL by URL; Alembic at start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from conveyor import __version__
from conveyor.store import changes, leases

MIGRATIONS = Path(__file__).parent / "migrations"
LOCK_WAIT = 30.0  # seconds the engines wait for SQLite's write lock (they would rather wait)


@dataclass(frozen=True)
class Pool:
    """A connection pool's size and how long a checkout (or a SQLite lock) may be waited for.

    The server has two: one for requests, as large as the threads that serve them (so a
    request thread always finds a connection; `size` smaller makes excess requests wait
    `timeout` and get 503), and one for the engines' background threads
    (conveyor.threads), so neither can starve the other.
    """

    size: int = 5
    timeout: float = 30.0
    lock_wait: float = LOCK_WAIT


def database_url(db: str | None, data_dir: Path) -> str:
    """Turn the `--db` option into a SQLAlchemy URL."""
    if not db:
        return f"sqlite:///{(data_dir / 'conveyor.db').resolve()}"
    if db.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + db.split("://", 1)[1]
    if "://" in db:
        return db
    return f"sqlite:///{Path(db).resolve()}"


def make_engine(url: str, pool: Pool | None = None) -> Engine:
    sized: dict[str, Any] = {}
    if pool is not None:
        sized = {"pool_size": pool.size, "max_overflow": 0, "pool_timeout": pool.timeout}
    lock_wait = pool.lock_wait if pool is not None else LOCK_WAIT
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": lock_wait}, **sized
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # a commit survives power loss (README)
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(lock_wait * 1000)}")
            cur.close()

        return engine
    # PostgreSQL: row and advisory locks wait lock_wait, as SQLite's busy_timeout does, then
    # fail the statement (server/busy.py answers 503). Times are kept as naive UTC (models.py):
    # the session's zone is UTC, whatever the server's default. Options in the URL win.
    connect: dict[str, Any] = {}
    if "options" not in make_url(url).query:
        connect["options"] = f"-c lock_timeout={int(lock_wait * 1000)} -c timezone=UTC"
    return create_engine(url, pool_pre_ping=True, connect_args=connect, **sized)


def unreachable(url: str, exc: BaseException) -> str:
    """What to tell a person whose database could not be opened at start (`url` rendered
    with its password hidden)."""
    orig = getattr(exc, "orig", None) or exc
    why = " ".join(str(orig).split())  # libpq's message spans lines
    if not why.endswith((".", "?", "!")):
        why += "."
    return (
        f"cannot open the database {url}: {why} Check that the database server runs and "
        "accepts this user from here, and that the database exists (README: PostgreSQL), "
        "or fix --db."
    )


class SchemaTooNew(Exception):
    """The database was migrated by a newer conveyor than this one: migrations only go forward."""


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision; refuse a database stamped with a
    revision this code does not know (a newer conveyor migrated it)."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        unknown = unknown_revisions(conn)
        if unknown:
            raise SchemaTooNew(
                f"the database {engine.url.render_as_string()} is at schema revision "
                f"{', '.join(unknown)}, which this conveyor ({__version__}) does not know: a "
                "newer conveyor migrated it, and migrations never run backwards. Run the "
                "newer conveyor again, or restore a backup taken before the upgrade."
            )
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def unknown_revisions(conn: Connection) -> list[str]:
    """The revisions the database is stamped with that this code's migrations lack."""
    current = MigrationContext.configure(conn).get_current_heads()
    script = ScriptDirectory(str(MIGRATIONS))
    known = {rev.revision for rev in script.walk_revisions()}
    return sorted(rev for rev in current if rev not in known)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    sessions = sessionmaker(engine, expire_on_commit=False)
    changes.watch(sessions)  # the generations that tell caches what went stale
    leases.watch(sessions)  # a lease holder's commits check it still holds it
    return sessions
