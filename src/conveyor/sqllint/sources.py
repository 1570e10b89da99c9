"""Where the lint reads the SQL: the files a conveyor.yml names, or its command's output."""

from __future__ import annotations

import glob
import subprocess
from pathlib import Path

COMMAND_TIMEOUT = 300.0  # seconds a `migrations.sql` command may take to print the SQL


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
