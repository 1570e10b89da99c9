"""The server's data directory: private to the user the server runs as.

It holds the database (API token digests, webhook secrets, the secret store), run logs
and artifacts. The server sets its umask to 077 before it creates anything, so every
file and directory it makes (the SQLite WAL and SHM files, logs, workspaces) is
owner-only, and it tightens a data directory or database left readable by others.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from sqlalchemy.engine import make_url

log = logging.getLogger("conveyor.server")

UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600


def sqlite_files(url: str) -> list[Path]:
    """The files of a SQLite database URL (the database, its WAL and SHM); none for others."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or not parsed.database:
        return []
    if parsed.database == ":memory:":
        return []
    db = Path(parsed.database)
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


def make_private(data_dir: Path, db_url: str) -> list[Path]:
    """Set the umask, create the data dir 0700 and tighten what others could read.

    Returns the paths whose permissions were tightened (each also logged as a warning).
    """
    os.umask(UMASK)
    data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    tightened = []
    wanted = [(data_dir, DIR_MODE)] + [(f, FILE_MODE) for f in sqlite_files(db_url)]
    for path, mode in wanted:
        try:
            current = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
        if current & 0o077:
            path.chmod(mode)
            tightened.append(path)
            log.warning(
                "permissions tightened: others could read the server's data",
                extra={"path": str(path), "was": oct(current), "now": oct(mode)},
            )
    return tightened
