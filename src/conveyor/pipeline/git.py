"""Git, driven as a subprocess: a mirror per app, a clean checkout per run."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

_SHA = re.compile(r"^[0-9a-f]{4,40}$")
# a commit message is shown, not archived: past this it is cut (a generated changelog
# pasted into a commit would otherwise fill the run's row)
MAX_MESSAGE = 4000
MAX_AUTHOR = 255  # store.models.Run.commit_author (PostgreSQL enforces it)
GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_ASKPASS": "/bin/true",
    "GIT_CONFIG_NOSYSTEM": "1",
    "LC_ALL": "C",
}


class GitError(Exception):
    """A git command failed; the message is git's own output."""


async def git(*args: str, cwd: Path | None = None, timeout: float = 600) -> str:
    env = {**os.environ, **GIT_ENV}
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise GitError(f"git {args[0]} timed out after {timeout:g}s") from None
    if proc.returncode != 0:
        message = (err or out).decode(errors="replace").strip()
        raise GitError(f"git {args[0]} failed (exit {proc.returncode}): {message}")
    return out.decode(errors="replace")


async def remote_head(repo_url: str, branch: str) -> str:
    """The sha the remote branch points at now."""
    out = await git("ls-remote", "--", repo_url, f"refs/heads/{branch}", timeout=120)
    for line in out.splitlines():
        sha, _, ref = line.partition("\t")
        if ref == f"refs/heads/{branch}":
            return sha
    raise GitError(f"branch {branch!r} not found in {repo_url}")


async def update_mirror(mirror: Path, repo_url: str) -> None:
    """Clone or fetch a bare mirror of the app's repository."""
    if not (mirror / "HEAD").exists():
        shutil.rmtree(mirror, ignore_errors=True)
        mirror.parent.mkdir(parents=True, exist_ok=True)
        tmp = mirror.with_name(mirror.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        await git("clone", "--mirror", "--quiet", "--", repo_url, str(tmp))
        tmp.rename(mirror)
        return
    # fetch from the URL itself (the app's repo may have moved): one git process, not two
    await git(
        "fetch",
        "--prune",
        "--quiet",
        "--",
        repo_url,
        "+refs/heads/*:refs/heads/*",
        "+refs/tags/*:refs/tags/*",
        cwd=mirror,
    )


async def resolve(mirror: Path, rev: str) -> str:
    """A full commit sha for a sha, sha prefix or branch ref present in the mirror."""
    if not _SHA.match(rev) and not rev.startswith("refs/heads/"):
        raise GitError(f"{rev!r} is not a commit sha")
    try:
        out = await git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", cwd=mirror)
    except GitError:
        what = f"branch {rev[11:]}" if rev.startswith("refs/heads/") else f"commit {rev}"
        raise GitError(f"{what} not found in the repository") from None
    return out.strip()


async def checkout(mirror: Path, sha: str, workspace: Path) -> None:
    """A clean work tree of exactly `sha` in `workspace` (removed first if present)."""
    shutil.rmtree(workspace, ignore_errors=True)
    workspace.parent.mkdir(parents=True, exist_ok=True)
    await git("clone", "--quiet", "--no-checkout", "--", str(mirror), str(workspace))
    await git(
        "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", sha, cwd=workspace
    )
    if (workspace / ".gitmodules").exists():
        await git("submodule", "update", "--init", "--recursive", "--quiet", cwd=workspace)


async def commit_time(repo: Path, sha: str) -> datetime | None:
    """The committer time of a commit (naive UTC, as the store keeps times); None if unknown.

    Lead time for changes starts here; a missing time only makes that figure fall back to
    the run's creation, so it never fails a checkout.
    """
    details = await commit_details(repo, sha)
    return details.committed_at if details is not None else None


@dataclass(frozen=True)
class Commit:
    """What the dashboard shows of a commit: who wrote it, what it says, when it was made."""

    author: str  # "Name <email>"
    message: str
    committed_at: datetime | None


async def commit_details(repo: Path, sha: str) -> Commit | None:
    """A commit's author, message and committer time (naive UTC); None if unknown.

    Like the committer time, these only describe the run: a commit git cannot show
    never fails a checkout.
    """
    try:
        # NUL-separated: a message may hold any other character, newlines included
        out = await git("show", "-s", "--format=%an <%ae>%x00%ct%x00%B", sha, cwd=repo, timeout=60)
    except (GitError, OSError):
        return None
    author, _, rest = out.partition("\0")
    stamp, _, message = rest.partition("\0")
    try:
        committed: datetime | None = datetime.fromtimestamp(int(stamp.strip()), UTC).replace(
            tzinfo=None
        )
    except (ValueError, OverflowError, OSError):
        committed = None
    message = message.strip()
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1].rstrip() + "…"
    author = author.strip()
    if len(author) > MAX_AUTHOR:
        author = author[: MAX_AUTHOR - 1].rstrip() + "…"
    return Commit(author=author, message=message, committed_at=committed)
