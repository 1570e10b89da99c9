"""The durable engine: a server killed with SIGKILL mid-step never leaves a run stuck."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conveyor.pipeline.process import find_step_processes, step_marker
from tests.helpers import ServerProcess, config, make_repo, wait_for

pytestmark = pytest.mark.slow


def _running_step(server: ServerProcess, run_id: int, kind: str) -> dict[str, object] | None:
    run = server.get(f"/api/runs/{run_id}")
    return next((s for s in run["steps"] if s["kind"] == kind and s["state"] == "running"), None)


def test_kill_during_a_test_step_retries_from_a_clean_workspace(
    server: ServerProcess, tmp_path: Path
) -> None:
    marker = tmp_path / "first-attempt"
    # the first attempt hangs (and leaves a file in its workspace); the retry passes
    step = f"if [ ! -e {marker} ]; then touch {marker} dirty; sleep 300; fi; test ! -e dirty"
    repo = tmp_path / "repo"
    make_repo(repo, {"conveyor.yml": config("crashy", [step], ["echo built"])})
    server.add_app("crashy", repo)
    run_id = server.post("/api/apps/crashy/runs", {})["id"]
    step_row = wait_for(lambda: marker.exists() and _running_step(server, run_id, "test"))
    orphans = wait_for(lambda: find_step_processes({step_marker(server.data, int(step_row["id"]))}))
    server.kill()
    assert all(os.path.exists(f"/proc/{pid}") for pid in orphans)  # left running by the crash

    server.start()
    run = server.wait_run(run_id, timeout=60)
    assert run["state"] == "succeeded", run
    assert run["attempt"] == 2
    first = [s for s in run["steps"] if s["attempt"] == 1]
    assert [s["state"] for s in first] == ["succeeded", "interrupted", "skipped", "skipped"]
    assert "interrupted" in first[1]["reason"]
    assert run["release"]
    # the orphaned step processes were stopped by the restarted server
    wait_for(
        lambda: not find_step_processes({step_marker(server.data, int(step_row["id"]))}), timeout=10
    )


def test_a_run_interrupted_twice_fails_with_reason_interrupted(
    server: ServerProcess, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    make_repo(repo, {"conveyor.yml": config("stuck", ["sleep 300"])})
    server.add_app("stuck", repo)
    run_id = server.post("/api/apps/stuck/runs", {})["id"]
    for attempt in (1, 2):
        wait_for(
            lambda a=attempt: (
                (r := _running_step(server, run_id, "test"))  # type: ignore[misc]
                and r["attempt"] == a
            )
        )
        server.kill()
        server.start()
    run = server.wait_run(run_id, timeout=30)
    assert run["state"] == "failed"
    assert run["reason"] == "interrupted"
    assert [s["state"] for s in run["steps"] if s["kind"] == "test"] == ["interrupted"] * 2


@pytest.mark.parametrize("kind", ["checkout", "artifact"])
def test_kill_at_other_moments_ends_cleanly(
    server: ServerProcess, tmp_path: Path, kind: str
) -> None:
    """Kill while the record says checkout or artifact is underway: the run still ends."""
    repo = tmp_path / "repo"
    make_repo(repo, {"conveyor.yml": config("k", ["true"]), "big.bin": "x" * 3_000_000})
    server.add_app("k", repo)
    run_id = server.post("/api/apps/k/runs", {})["id"]
    wait_for(
        lambda: (
            _running_step(server, run_id, kind)
            or server.get(f"/api/runs/{run_id}")["state"] not in ("queued", "running")
        ),
        interval=0.005,
    )
    server.kill()
    server.start()
    run = server.wait_run(run_id, timeout=60)
    assert run["state"] == "succeeded", run
    releases = server.get("/api/releases", params={"app": "k"})
    assert len(releases) == 1
