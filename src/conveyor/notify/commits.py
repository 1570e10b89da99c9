"""The commits between two releases, read from the app's mirror (for announcements)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conveyor.notify.announcements import Commit
from conveyor.pipeline.git import GIT_ENV

MAX_READ = 200
TIMEOUT = 10.0


def commits_since(mirror: Path, old: str, new: str) -> list[Commit] | None:
    """The commits reachable from `new` and not from `old`, newest first; None when the
    mirror cannot tell (it lacks one of them, or git failed)."""
    if old == new:
        return []
    try:
        done = subprocess.run(
            ["git", "log", f"--max-count={MAX_READ}", "--format=%H%x00%s%x00%an", f"{old}..{new}"],
            cwd=mirror,
            env={**os.environ, **GIT_ENV},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    commits = []
    for line in done.stdout.splitlines():
        sha, _, rest = line.partition("\0")
        subject, _, author = rest.partition("\0")
        commits.append(Commit(sha=sha, subject=subject[:200], author=author[:100]))
    return commits
