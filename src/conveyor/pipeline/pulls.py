"""Checking out a pull request: its head, or the forge's merge result when that is current."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from conveyor.forge.pulls import choose_tested
from conveyor.pipeline import git


@dataclass(frozen=True)
class PullCheckout:
    """What a pull-request run checks out (from store.models.PullRequestRun)."""

    number: int
    head_sha: str
    head_ref: str
    merge_ref: str | None


async def _fetch(mirror: Path, repo_url: str, ref: str) -> bool:
    """Fetch one ref of the app's repository into the mirror; False when it has none."""
    try:
        await git.git("fetch", "--quiet", "--", repo_url, f"+{ref}:{ref}", cwd=mirror)
    except git.GitError:
        return False
    return True


async def checkout_pull(
    mirror: Path, repo_url: str, pull: PullCheckout, workspace: Path
) -> tuple[str, str]:
    """Check out what to test in `workspace`: the sha tested, and a line saying what it is."""
    await git.update_mirror(mirror, repo_url)
    # the head may come from a fork: the base repository keeps it under head_ref
    await _fetch(mirror, repo_url, pull.head_ref)
    head = await git.resolve(mirror, pull.head_sha)
    merge_sha: str | None = None
    parents: list[str] = []
    if pull.merge_ref is not None and await _fetch(mirror, repo_url, pull.merge_ref):
        merge_sha = (await git.git("rev-parse", f"{pull.merge_ref}^{{commit}}", cwd=mirror)).strip()
        parents = (await git.git("rev-parse", f"{merge_sha}^@", cwd=mirror)).split()
    tested, line = choose_tested(head, merge_sha, parents)
    await git.checkout(mirror, tested, workspace)
    return tested, f"pull request {pull.number}: {line}"
