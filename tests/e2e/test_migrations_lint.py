"""The migrations lint in a run: a real server, a real repository; the findings fail the
run before its release is built, and are in the run's log."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import ServerProcess, commit, config, make_repo

RENAME = "ALTER TABLE users RENAME COLUMN name TO full_name;\n"
EXPAND = (
    "ALTER TABLE users ADD COLUMN full_name text;\n"
    "-- conveyor: waive require-concurrent-index-creation: users has 40 rows\n"
    "CREATE INDEX users_full_name ON users (full_name);\n"
)


def test_a_rename_in_one_step_fails_the_run_and_its_expand_half_passes(
    server: ServerProcess, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    migrations = "migrations:\n  expand: psql -f migrations/0002.sql\n  sql: cat migrations/*.sql\n"
    yml = config("shop", ["true"], ["touch BUILT"], migrations)
    make_repo(repo, {"conveyor.yml": yml, "migrations/0002.sql": "\n" + RENAME})
    server.add_app("shop", repo)
    run = server.wait_run(server.post("/api/apps/shop/runs", {})["id"])
    assert run["state"] == "failed", run
    assert run["release"] is None
    assert "migrations lint" in run["reason"]
    assert [(s["kind"], s["state"]) for s in run["steps"]] == [
        ("checkout", "succeeded"),
        ("test", "succeeded"),
        ("build", "succeeded"),
        ("lint", "failed"),
        ("artifact", "skipped"),
    ]
    log = server.get(f"/api/runs/{run['id']}/logs")[3]["text"]
    assert "`cat migrations/*.sql`:2: renaming-column: a column is renamed" in log
    assert "instead: add the new column (expand)" in log
    assert server.get("/api/releases", params={"app": "shop"}) == []

    commit(repo, {"migrations/0002.sql": EXPAND}, message="the rename's expand half")
    run = server.wait_run(server.post("/api/apps/shop/runs", {})["id"])
    assert run["state"] == "succeeded", run
    log = server.get(f"/api/runs/{run['id']}/logs")[3]["text"]
    assert "waived: users has 40 rows" in log  # the waiver is recorded in the run's log
    assert "2 statements, 0 findings, 1 waived" in log

    # the release's migration hash covers the SQL the lint read, not the rest of the tree
    def release(files: dict[str, str]) -> dict[str, str]:
        commit(repo, files)
        built = server.wait_run(server.post("/api/apps/shop/runs", {})["id"])
        assert built["state"] == "succeeded", built
        return server.get(f"/api/releases/{built['release']}")  # type: ignore[no-any-return]

    first = server.get(f"/api/releases/{run['release']}")
    assert first["migration_hash"], first
    other = release({"README": "another file"})
    assert other["sha256"] != first["sha256"]
    assert other["migration_hash"] == first["migration_hash"]
    more = release({"migrations/0003.sql": "ALTER TABLE users ADD COLUMN email text;\n"})
    assert more["migration_hash"] not in (None, first["migration_hash"]), more
