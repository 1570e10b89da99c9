"""`conveyor backup` and `conveyor restore`: the server's state in one tar, taken while it runs.

A local command on the server's machine, reading its data directory, not an API call:
SQLite's online backup API copies a consistent snapshot of a live database from
another process (readers and the server's writers go on meanwhile); a backup holds
the key file, which no API hands out; and a restore happens where no server runs yet.

The tar holds `manifest.json` (format, conveyor version, schema revision, database
kind), the database (`conveyor.db`, or `conveyor.pgdump` from pg_dump for
PostgreSQL), the key file and the rest of the data directory: artifacts and run
logs. Repository mirrors and workspaces are caches, rebuilt on demand, left out.
Files are read after the database snapshot, so every release it names has its
artifact in the tar (artifacts are content-addressed and never change).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from conveyor import __version__
from conveyor.server.datadir import DIR_MODE, FILE_MODE, UMASK
from conveyor.server.secretkey import KEY_FILE
from conveyor.store.db import MIGRATIONS, database_url

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_FILE = "conveyor.db"
PG_FILE = "conveyor.pgdump"
CACHES = ("repos", "work")  # top-level directories of the data dir left out
COMMAND_TIMEOUT = 3600


class BackupError(Exception):
    """What went wrong, where, and what to do: printed as it is."""


@dataclass(frozen=True)
class Manifest:
    format: int
    conveyor_version: str
    schema_revision: str
    database: str  # sqlite or postgresql
    created_at: str
    files: int


def known_revisions() -> list[str]:
    """The schema revisions this conveyor knows, oldest first."""
    script = ScriptDirectory(str(MIGRATIONS))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        return Path(parsed.database or "")
    return None


def _snapshot_sqlite(db: Path, into: Path) -> str:
    if not db.is_file():
        raise BackupError(
            f"no database at {db}: is --data the server's data directory (or --db its database)?"
        )
    # read-write like the server (a WAL database read-only needs its -shm file): the
    # backup API only reads the source, page by page, and sees one consistent snapshot
    source = sqlite3.connect(db, timeout=30)
    target = sqlite3.connect(into)
    try:
        source.execute("PRAGMA busy_timeout=30000")
        source.backup(target)
        row = target.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error as exc:
        raise BackupError(f"reading the database {db} failed: {exc}") from None
    finally:
        source.close()
        target.close()
    if row is None:
        raise BackupError(f"the database {db} has no schema revision: not a conveyor database")
    return str(row[0])


def _snapshot_postgres(url: str, into: Path) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    finally:
        engine.dispose()
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    _run(["pg_dump", "--format=custom", "--no-owner", f"--file={into}", f"--dbname={plain}"])
    return str(revision)


def _run(argv: list[str]) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except FileNotFoundError:
        raise BackupError(f"{argv[0]} is not installed (PostgreSQL's client tools)") from None
    if done.returncode != 0:
        raise BackupError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


def _data_files(data_dir: Path, skip: set[Path]) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(data_dir):
        here = Path(root)
        if here == data_dir:
            dirs[:] = [d for d in dirs if d not in CACHES]
        dirs.sort()
        for name in sorted(names):
            path = here / name
            if path in skip or name.endswith((".tmp", ".lock")) or not path.is_file():
                continue
            files.append(path)
    return files


def take_backup(data_dir: Path, db: str | None, target: Path) -> Manifest:
    """Write the backup tar to target (0600: it holds the key file)."""
    url = database_url(db, data_dir)
    key = data_dir / KEY_FILE
    if not key.is_file():
        raise BackupError(
            f"no key file at {key}: is --data the data directory of a conveyor server "
            "that has started once?"
        )
    target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".conveyor-backup-", dir=target.parent))
    try:
        sqlite_db = _sqlite_path(url)
        if sqlite_db is not None:
            dump, kind = work / SQLITE_FILE, "sqlite"
            revision = _snapshot_sqlite(sqlite_db, dump)
            skip = {sqlite_db.with_name(sqlite_db.name + s) for s in ("", "-wal", "-shm")}
        else:
            dump, kind = work / PG_FILE, "postgresql"
            revision = _snapshot_postgres(url, dump)
            skip = set()
        files = _data_files(data_dir, skip | {key})
        manifest = Manifest(
            format=FORMAT,
            conveyor_version=__version__,
            schema_revision=revision,
            database=kind,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            files=len(files),
        )
        partial = work / "backup.tar"
        with tarfile.open(partial, "w") as tar:
            body = json.dumps(asdict(manifest), indent=2).encode() + b"\n"
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode, info.mtime = len(body), 0o600, int(datetime.now(UTC).timestamp())
            tar.addfile(info, io.BytesIO(body))
            tar.add(dump, arcname=dump.name)
            tar.add(key, arcname=KEY_FILE)
            for path in files:
                with contextlib.suppress(FileNotFoundError):  # a log removed meanwhile
                    tar.add(path, arcname=f"data/{path.relative_to(data_dir)}")
        partial.chmod(FILE_MODE)
        os.replace(partial, target)
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def read_manifest(tar: tarfile.TarFile, source: Path) -> Manifest:
    try:
        member = tar.extractfile(MANIFEST)
        assert member is not None
        raw = json.loads(member.read())
        return Manifest(**raw)
    except (KeyError, AssertionError, ValueError, TypeError):
        raise BackupError(f"{source} is not a conveyor backup (no readable {MANIFEST})") from None


def check_restorable(manifest: Manifest, source: Path) -> None:
    """Refuse a backup this conveyor cannot read (a newer format or schema)."""
    known = known_revisions()
    if manifest.format > FORMAT or manifest.schema_revision not in known:
        raise BackupError(
            f"{source} was taken by conveyor {manifest.conveyor_version} (schema revision "
            f"{manifest.schema_revision}, backup format {manifest.format}); this conveyor "
            f"{__version__} knows schema revisions up to {known[-1]} and format {FORMAT}: "
            f"restore it with conveyor {manifest.conveyor_version} or newer"
        )


def _safe_name(name: str) -> bool:
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


def restore_backup(source: Path, data_dir: Path, db: str | None) -> Manifest:
    """Fill a fresh data directory (and database) from a backup; refuses a used one."""
    if data_dir.exists() and any(data_dir.iterdir()):
        raise BackupError(
            f"{data_dir} is not empty: restore into a new data directory, then start "
            "`conveyor server --data` on it"
        )
    try:
        tar = tarfile.open(source, "r")  # noqa: SIM115 - closed by the `with` below
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"cannot read {source}: {exc}") from None
    with tar:
        manifest = read_manifest(tar, source)
        check_restorable(manifest, source)
        os.umask(UMASK)
        data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        url = database_url(db, data_dir)
        sqlite_db = _sqlite_path(url)
        if manifest.database == "sqlite" and sqlite_db is None:
            raise BackupError("this backup holds a SQLite database: restore it without --db")
        if manifest.database == "postgresql" and sqlite_db is not None:
            raise BackupError("this backup holds a PostgreSQL dump: give --db postgresql://…")
        if sqlite_db is not None and sqlite_db.exists():
            raise BackupError(f"a database already exists at {sqlite_db}: restore elsewhere")
        work = Path(tempfile.mkdtemp(prefix=".restore-", dir=data_dir))
        try:
            for member in tar.getmembers():
                if not (member.isfile() or member.isdir()) or not _safe_name(member.name):
                    raise BackupError(f"{source}: unexpected entry {member.name!r}; not restored")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(work, filter="data")
            else:  # Python before 3.11.4: the names were checked above
                tar.extractall(work)
            dump = work / (SQLITE_FILE if manifest.database == "sqlite" else PG_FILE)
            if not dump.is_file():
                raise BackupError(f"{source} holds no {dump.name}: not restored")
            key = work / KEY_FILE
            if not key.is_file():
                raise BackupError(f"{source} holds no key file: its secrets could not be opened")
            if (work / "data").is_dir():
                for item in (work / "data").iterdir():
                    os.replace(item, data_dir / item.name)
            os.replace(key, data_dir / KEY_FILE)
            (data_dir / KEY_FILE).chmod(FILE_MODE)
            if sqlite_db is not None:
                sqlite_db.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(work / SQLITE_FILE, sqlite_db)
                sqlite_db.chmod(FILE_MODE)
            else:
                plain = make_url(url).set(drivername="postgresql")
                dbname = plain.render_as_string(hide_password=False)
                _run(["pg_restore", "--no-owner", f"--dbname={dbname}", str(work / PG_FILE)])
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return manifest
