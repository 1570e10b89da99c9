"""Runs end to end: a real server process, real git repositories, real subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import ServerProcess, commit, config, make_repo, wait_for


def test_passing_commit_builds_a_release_with_a_reproducible_sha256(
    server: ServerProcess, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    sha = make_repo(
        repo,
        {
            "conveyor.yml": config(
                "shop",
                ["test -f app.py"],
                ["echo built > BUILT"],
                'artifact:\n  exclude: ["tests/"]\n',
            ),
            "app.py": "print('hi')\n",
            "tests/test_x.py": "\n",
        },
    )
    server.add_app("shop", repo)
    first = server.wait_run(server.post("/api/apps/shop/runs", {})["id"])
    second = server.wait_run(server.post("/api/apps/shop/runs", {"sha": sha[:10]})["id"])
    assert first["state"] == "succeeded", first
    assert second["state"] == "succeeded", second
    assert first["sha"] == second["sha"] == sha
    assert first["release"] == f"{sha[:7]}-1"
    assert second["release"] == f"{sha[:7]}-2"
    one = server.get(f"/api/releases/{first['release']}")
    two = server.get(f"/api/releases/{second['release']}")
    assert one["sha256"] == two["sha256"]
    assert one["size"] == two["size"] > 0
    # the artifact served is the stored one, with the right digest and content
    artifact = server.http.get(f"/api/releases/{one['id']}/artifact")
    assert artifact.status_code == 200
    import hashlib
    import io
    import tarfile

    assert hashlib.sha256(artifact.content).hexdigest() == one["sha256"]
    with tarfile.open(fileobj=io.BytesIO(artifact.content)) as tar:
        names = tar.getnames()
    assert "BUILT" in names and "app.py" in names
    assert not any(n.startswith(("tests", ".git")) for n in names)
    kinds = [(s["kind"], s["state"]) for s in server.get(f"/api/runs/{first['id']}")["steps"]]
    assert kinds == [
        ("checkout", "succeeded"),
        ("test", "succeeded"),
        ("build", "succeeded"),
        ("artifact", "succeeded"),
    ]


def test_failing_tests_yield_no_release_and_stop_later_steps(
    server: ServerProcess, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    make_repo(
        repo,
        {
            "conveyor.yml": config(
                "shop", ["echo checking; exit 3", "touch SECOND_RAN"], ["touch BUILD_RAN"]
            )
        },
    )
    server.add_app("shop", repo)
    run = server.wait_run(server.post("/api/apps/shop/runs", {})["id"])
    assert run["state"] == "failed"
    assert run["release"] is None
    assert "exit 3" in run["reason"]
    states = [s["state"] for s in run["steps"]]
    assert states == ["succeeded", "failed", "skipped", "skipped", "skipped"]
    assert server.get("/api/releases", params={"app": "shop"}) == []
    logs = server.get(f"/api/runs/{run['id']}/logs")
    assert "checking" in logs[1]["text"]


def test_steps_get_their_environment_and_a_timeout(server: ServerProcess, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    sha = make_repo(
        repo,
        {
            "conveyor.yml": (
                "app: envy\ntest:\n"
                '  - run: echo "app=$CONVEYOR_APP sha=$CONVEYOR_SHA run=$CONVEYOR_RUN ci=$CI"\n'
                "  - run: sleep 30\n    timeout: 1s\n"
            )
        },
    )
    server.add_app("envy", repo)
    run = server.wait_run(server.post("/api/apps/envy/runs", {})["id"])
    assert run["state"] == "failed"
    assert run["reason"] == "test step 'sleep 30' timed out after 1s"
    logs = server.get(f"/api/runs/{run['id']}/logs")
    assert f"app=envy sha={sha} run={run['id']} ci=true" in logs[1]["text"]
    # the admin token of the server never reaches a step
    assert "CONVEYOR_ADMIN_TOKEN" not in json.dumps(logs)


def test_secrets_never_appear_in_any_stored_log(server: ServerProcess, tmp_path: Path) -> None:
    secret = "s3cr3t-Pa55word-value"
    repo = tmp_path / "repo"
    make_repo(
        repo,
        {
            "conveyor.yml": (
                "app: vault\n"
                "test:\n"
                '  - run: echo "db is $DATABASE_URL"; echo "$DATABASE_URL" >&2\n'
                '  - run: python3 -c "import os,sys; '
                "sys.stdout.write(os.environ['DATABASE_URL'][::1])\"\n"
                "build:\n"
                '  - run: echo "prefix${DATABASE_URL}suffix"; exit 1\n'
                "service:\n  start: python3 app.py\n  port: 8000\n  secrets: [DATABASE_URL]\n"
            )
        },
    )
    server.add_app("vault", repo)
    r = server.http.put("/api/apps/vault/secrets/DATABASE_URL", json={"value": secret})
    assert r.status_code == 204
    run = server.wait_run(server.post("/api/apps/vault/runs", {})["id"])
    assert run["state"] == "failed"  # the build step exits 1 after printing
    logs = server.get(f"/api/runs/{run['id']}/logs")
    text = "".join(c["text"] for c in logs)
    assert "db is ***" in text and "prefix***suffix" in text
    # nothing under the data directory (the database and its WAL too: secrets are
    # sealed at rest), nor the server's own log, holds the value
    for path in [*server.data.rglob("*"), server.log_path]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_unclonable_repository_fails_the_run_with_gits_message(
    server: ServerProcess, tmp_path: Path
) -> None:
    server.add_app("ghost", tmp_path / "does-not-exist")
    run = server.wait_run(server.post("/api/apps/ghost/runs", {})["id"])
    assert run["state"] == "failed"
    assert run["reason"] == "checkout failed"
    log = server.get(f"/api/runs/{run['id']}/logs")[0]["text"]
    assert "does not exist" in log or "not a git repository" in log.lower(), log


def test_invalid_config_fails_the_run_with_line_and_column(
    server: ServerProcess, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    make_repo(repo, {"conveyor.yml": "app: shop\ntest:\n  - run: true\n    timout: 5m\n"})
    server.add_app("shop", repo)
    run = server.wait_run(server.post("/api/apps/shop/runs", {})["id"])
    assert run["state"] == "failed"
    assert run["reason"] == "conveyor.yml is invalid"
    log = server.get(f"/api/runs/{run['id']}/logs")[0]["text"]
    assert "conveyor.yml:4:5" in log and "timout" in log, log


def test_newer_commit_supersedes_a_queued_older_one(server: ServerProcess, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_repo(repo, {"conveyor.yml": config("busy", ["sleep 2"])})
    server.add_app("busy", repo)
    first = server.post("/api/apps/busy/runs", {})
    wait_for(lambda: server.get(f"/api/runs/{first['id']}")["state"] == "running")
    older = server.post("/api/apps/busy/runs", {})
    commit(repo, {"x": "1"})
    newer = server.post("/api/apps/busy/runs", {})
    assert server.get(f"/api/runs/{older['id']}")["state"] == "superseded"
    assert server.wait_run(newer["id"])["state"] == "succeeded"
    assert server.wait_run(first["id"])["state"] == "succeeded"
    # one run per app at a time: the newer one started after the first ended
    a = server.get(f"/api/runs/{first['id']}")
    b = server.get(f"/api/runs/{newer['id']}")
    assert b["started_at"] >= a["finished_at"]


def test_unknown_names_get_404_with_a_message(server: ServerProcess) -> None:
    for path in ("/api/apps/nope", "/api/runs/999", "/api/releases/abc1234-1"):
        r = server.http.get(path)
        assert r.status_code == 404
        assert "unknown" in r.json()["detail"]
    r = server.http.post("/api/apps/nope/runs", json={})
    assert r.status_code == 404


def test_abort_stops_a_running_step_and_releases_nothing(
    server: ServerProcess, tmp_path: Path
) -> None:
    from conveyor.pipeline.process import find_step_processes, step_marker

    repo = tmp_path / "repo"
    make_repo(repo, {"conveyor.yml": config("slow", ["sleep 300"], ["echo never"])})
    server.add_app("slow", repo)
    run_id = server.post("/api/apps/slow/runs", {})["id"]
    step = wait_for(
        lambda: next(
            (
                s
                for s in server.get(f"/api/runs/{run_id}")["steps"]
                if s["kind"] == "test" and s["state"] == "running"
            ),
            None,
        )
    )
    aborted = server.cli("abort", str(run_id))
    assert aborted.returncode == 0, aborted.stderr
    run = server.wait_run(run_id, timeout=20)
    assert run["state"] == "cancelled" and run["release"] is None
    assert [s["state"] for s in run["steps"]] == ["succeeded", "cancelled", "skipped", "skipped"]
    assert not find_step_processes({step_marker(server.data, step["id"])})
    again = server.cli("abort", str(run_id))
    assert again.returncode == 2 and "already ended" in again.stderr
