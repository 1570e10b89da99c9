"""A throwaway PostgreSQL cluster for tests: initdb and pg_ctl in a temporary directory.

Debian's `postgresql` package (scripts/setup.sh) provides the binaries; no system
service runs. The cluster listens on a unix socket in its own directory only (no TCP
port to collide with another worker's), trusts local connections, and trades
durability for speed (fsync off): a test database lives minutes. PostgreSQL refuses
to run as root, so when we are root the cluster runs as the `postgres` user (or
`nobody`) through runuser.

A fresh database is a copy of a template (`CREATE DATABASE … TEMPLATE`): a file copy
of a few megabytes, far cheaper than migrating again.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

PG_ROOT = Path("/usr/lib/postgresql")
USER = "postgres"  # the database superuser initdb creates (named with -U)

# for tests only: nothing here must survive a crash of the machine
SETTINGS = {
    "listen_addresses": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",  # several servers a worker, each with its own pools
    "shared_buffers": "32MB",
    "dynamic_shared_memory_type": "mmap",  # a container's /dev/shm may be tiny
    "log_min_messages": "warning",
}


class PostgresMissing(RuntimeError):
    """PostgreSQL's server binaries are not installed."""


def bindir() -> Path:
    """The newest installed PostgreSQL's bin directory (Debian keeps it off PATH)."""
    found = sorted(
        (p for p in PG_ROOT.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not found:
        raise PostgresMissing(
            f"no PostgreSQL server under {PG_ROOT}: run `make setup` (installs Debian's "
            "`postgresql` package) to run the tests against PostgreSQL"
        )
    return found[-1]


def _runner() -> tuple[list[str], int | None, int | None]:
    """The argv prefix that runs a command as an unprivileged user, and its uid and gid."""
    if os.geteuid() != 0:
        return [], None, None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"], entry.pw_uid, entry.pw_gid
    raise PostgresMissing("running as root, and neither a `postgres` nor a `nobody` user exists")


class Cluster:
    """One PostgreSQL cluster in a temporary directory, reached on its unix socket."""

    def __init__(self) -> None:
        self.bin = bindir()
        self.prefix, uid, gid = _runner()
        self.dir = Path(tempfile.mkdtemp(prefix="conveyor-pg-"))
        if uid is not None and gid is not None:
            os.chown(self.dir, uid, gid)
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.socket_dir = self.dir  # short: a socket path has a limit of about 100 bytes

    def _run(self, *argv: str) -> None:
        done = subprocess.run(
            [*self.prefix, *argv], capture_output=True, text=True, timeout=120, cwd=self.dir
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{argv[0]} failed:\n{done.stdout}{done.stderr}{log}")

    def start(self) -> Cluster:
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        return self.resume()

    def resume(self) -> Cluster:
        """Start PostgreSQL on this cluster's data (again, after `halt`), same socket."""
        options = " ".join(f"-c {k}={v}" for k, v in SETTINGS.items())
        options += f" -c unix_socket_directories={self.socket_dir} -c port=5432"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def halt(self) -> None:
        """Stop PostgreSQL at once (`pg_ctl stop -m immediate`: every connection cut, as a
        crash would), keeping its data for `resume`."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """The `--db` URL of one database: `postgresql://user@/name?host=/socket/dir`."""
        return f"postgresql://{USER}@/{database}?host={self.socket_dir}"

    def sqlalchemy_url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}@/{database}?host={self.socket_dir}"

    def create_database(self, template: str = "template1", name: str | None = None) -> str:
        """A new database copied from `template`; returns its name."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def empty(self, url: str, *, schema: bool = False) -> None:
        """Empty every table of the database at `url` (a `--db` URL), keeping the schema and
        its Alembic stamp; with `schema`, drop the schema too. Whoever is still connected
        to it (a finished test's engine) is disconnected first."""
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if schema:
                conn.execute("DROP SCHEMA public CASCADE")
                conn.execute("CREATE SCHEMA public")
                return
            tables = [
                row[0]
                for row in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename <> 'alembic_version'"
                )
            ]
            if tables:
                names = ", ".join(f'"{t}"' for t in tables)
                conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")


def database_on(socket_dir: str) -> str:
    """A new empty database on the cluster listening in `socket_dir`: its `--db` URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"postgresql://{USER}@/postgres?host={socket_dir}", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql://{USER}@/{name}?host={socket_dir}"


__all__ = ["Cluster", "PostgresMissing", "bindir", "database_on"]
