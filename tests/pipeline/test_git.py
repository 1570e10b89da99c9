"""Reading a commit's committer time, where lead time for changes starts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conveyor.pipeline import git
from tests.helpers import commit, make_repo
from tests.helpers import git as git_cmd


def test_commit_time_is_the_committer_time_in_utc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a committer in another zone, and an author time that must not be used
    monkeypatch.setenv("GIT_COMMITTER_DATE", "1700000000 +0200")
    monkeypatch.setenv("GIT_AUTHOR_DATE", "1600000000 +0000")
    sha = make_repo(tmp_path / "repo", {"a.txt": "a"})
    found = asyncio.run(git.commit_time(tmp_path / "repo", sha))
    assert found == datetime.fromtimestamp(1700000000, UTC).replace(tzinfo=None)


def test_an_unknown_commit_has_no_time(tmp_path: Path) -> None:
    make_repo(tmp_path / "repo", {"a.txt": "a"})
    assert asyncio.run(git.commit_time(tmp_path / "repo", "0" * 40)) is None


def test_commit_details_are_the_author_the_whole_message_and_the_committer_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_COMMITTER_DATE", "1700000000 +0200")
    repo = tmp_path / "repo"
    make_repo(repo, {"a.txt": "a"})
    message = "Fix the cart: <totals> & taxes\n\nA body line\nwith ünïcode"
    sha = commit(repo, {"a.txt": "b"}, message=message)
    found = asyncio.run(git.commit_details(repo, sha))
    assert found == git.Commit(
        author="Test <t@example.com>",
        message=message,
        committed_at=datetime.fromtimestamp(1700000000, UTC).replace(tzinfo=None),
    )
    assert asyncio.run(git.commit_details(repo, "0" * 40)) is None


def test_a_huge_commit_message_is_cut(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_repo(repo, {"a.txt": "a"})
    sha = commit(repo, {"a.txt": "b"}, message="x" * 10_000)
    found = asyncio.run(git.commit_details(repo, sha))
    assert found is not None and len(found.message) == git.MAX_MESSAGE
    assert found.message.endswith("…")


def test_a_huge_author_is_cut_to_what_the_store_holds(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_repo(repo, {"a.txt": "a"})
    git_cmd(repo, "commit", "-q", "--amend", "--no-edit", f"--author={'A' * 300} <a@example.com>")
    found = asyncio.run(git.commit_details(repo, git_cmd(repo, "rev-parse", "HEAD")))
    assert found is not None and len(found.author) == git.MAX_AUTHOR
    assert found.author.startswith("AAA") and found.author.endswith("…")
