"""Reading a commit's committer time, where lead time for changes starts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conveyor.pipeline import git
from tests.helpers import make_repo


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
