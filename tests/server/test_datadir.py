"""The server's data directory and database are readable by the server's user only."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from conveyor.server.datadir import sqlite_files
from tests.helpers import config, make_repo, running_server


@pytest.mark.parametrize(
    ("url", "files"),
    [
        ("sqlite:////srv/c/conveyor.db", ["/srv/c/conveyor.db", "-wal", "-shm"]),
        ("sqlite:///rel.db", ["rel.db", "-wal", "-shm"]),
        ("sqlite://", []),
        ("sqlite:///:memory:", []),
        ("postgresql+psycopg://u:p@db/conveyor", []),
    ],
)
def test_sqlite_files(url: str, files: list[str]) -> None:
    expected = [files[0], *(files[0] + suffix for suffix in files[1:])] if files else []
    assert [str(p) for p in sqlite_files(url)] == expected


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_server_keeps_its_data_private_and_tightens_a_loose_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)  # whatever the test's umask
    (data / "conveyor.db").touch()
    (data / "conveyor.db").chmod(0o644)
    repo = tmp_path / "repo"
    build = ["mkdir -p out && echo built > out/x"]
    make_repo(repo, {"conveyor.yml": config("shop", ["echo hello"], build)})
    with running_server(data) as server:
        server.add_app("shop", repo)
        run = server.wait_run(server.post("/api/apps/shop/runs", {})["id"])
        assert run["state"] == "succeeded", run
        assert _mode(data) == 0o700
        for name in ("conveyor.db", "conveyor.db-wal", "conveyor.db-shm"):
            assert _mode(data / name) == 0o600, name
        assert "permissions tightened" in server.log()
    # everything the server made under it (logs, mirrors, workspaces, artifacts) is private
    made = list(data.rglob("*"))
    assert len(made) > 5
    # (a clone of a local repository hard-links its objects: those are the repository's files)
    loose = [
        p
        for p in made
        if not p.is_symlink() and (p.is_dir() or p.stat().st_nlink == 1) and _mode(p) & 0o077
    ]
    assert loose == []
