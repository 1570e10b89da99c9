"""Where the lint reads the SQL: the files a conveyor.yml names, or its command's output."""

from __future__ import annotations

import glob
import hashlib
import subprocess
from collections.abc import Iterable
from pathlib import Path

COMMAND_TIMEOUT = 300.0  # seconds a `migrations.sql` command may take to print the SQL
# a run's lint step writes the sources_digest of the SQL it read to the file this names:
# the release's migration hash covers it (deploy/migrationgate.py)
SQL_DIGEST_ENV = "CONVEYOR_SQL_DIGEST"


class SqlSourceError(Exception):
    """The SQL could not be read: says which file or command, and why."""


def read_files(root: Path, patterns: list[str]) -> list[tuple[str, str]]:
    """(name, text) of each file the patterns (globs, relative to root or absolute) match."""
    found: list[tuple[str, str]] = []
    for pattern in patterns:
        matches = glob.glob(pattern, root_dir=root, recursive=True)
        paths = sorted(p for p in (root / m for m in matches) if p.is_file())
        if not paths:
            raise SqlSourceError(f"{pattern}: no such file (relative to {root})")
        for path in paths:
            name = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
            try:
                found.append((name, path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                raise SqlSourceError(f"{name}: cannot read it ({exc})") from None
    return found


def command_output(command: str, cwd: Path, timeout: float = COMMAND_TIMEOUT) -> str:
    """What `command` (bash) prints on stdout, run in cwd; its stderr goes to ours."""
    try:
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", command],
            cwd=cwd,
            stdout=subprocess.PIPE,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SqlSourceError(f"`{command}` did not finish within {timeout:g} s") from None
    if done.returncode != 0:
        raise SqlSourceError(f"`{command}` failed (exit {done.returncode}): see its output above")
    return done.stdout


def sources_digest(sources: Iterable[tuple[str, str]]) -> str:
    """sha256 of the SQL a migration prints or lists: (name, text) in order."""
    h = hashlib.sha256()
    for name, text in sources:
        for part in (name, text):
            data = part.encode("utf-8", "surrogatepass")
            h.update(len(data).to_bytes(8, "big") + data)
    return h.hexdigest()
