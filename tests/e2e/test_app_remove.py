"""`conveyor app remove`: refused while the app serves traffic or has queued work, unless
--force; then every record of it goes and its hosts' desired states drop it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.helpers import ServerProcess, config, make_repo, wait_for


def _closed_window() -> str:
    day = (datetime.now(UTC) + timedelta(days=2)).strftime("%a")
    return f"{day} 03:00-03:01 UTC"


def test_app_remove_refuses_then_forces(server: ServerProcess, tmp_path: Path) -> None:
    extra = (
        "service: {start: ./run, port: 8000}\n"
        "environments:\n"
        "  production:\n"
        "    hosts: [web-1]\n"
        f'    window: "{_closed_window()}"\n'  # the deployment waits: queued work
    )
    make_repo(tmp_path / "repo", {"conveyor.yml": config("shop", ["true"], extra=extra)})
    server.add_app("shop", tmp_path / "repo")
    server.add_app("other", tmp_path / "repo")
    server.post("/api/hosts", {"name": "web-1"})
    assert server.http.put("/api/apps/shop/secrets/API_KEY", json={"value": "s3cret"}).is_success
    run = server.wait_run(server.post("/api/apps/shop/runs", {})["id"])
    assert run["state"] == "succeeded", run
    release = run["release"]

    def gated() -> dict[str, Any] | None:
        # queued by the run's end, then held by the scheduler's next look at the window
        (d,) = server.get("/api/deployments?app=shop")
        return d if d["state"] == "waiting" else None

    waiting = wait_for(gated, timeout=30)
    placed = server.http.put(
        "/api/hosts/web-1/apps/shop", json={"releases": [{"release": release, "weight": 100}]}
    )
    assert placed.is_success, placed.text
    generation = server.get("/api/hosts/web-1")["generation"]

    refused = server.cli("app", "remove", "shop")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    said = " ".join(refused.stderr.split())
    assert "serves traffic on web-1" in said, said
    assert f"deployment {waiting['id']} (production, waiting)" in said, said
    assert "--force" in said and "HTTP 409" in said, said
    assert server.get("/api/apps/shop")["name"] == "shop"  # nothing changed

    removed = server.cli("app", "remove", "shop", "--force")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert "app shop removed" in removed.stdout
    for gone in (
        "/api/apps/shop",
        f"/api/runs/{run['id']}",
        f"/api/releases/{release}",
        f"/api/deployments/{waiting['id']}",
    ):
        assert server.http.get(gone).status_code == 404, gone
    host = server.get("/api/hosts/web-1")
    assert host["generation"] > generation  # the agent is told: a new desired state
    assert [a["app"] for a in server.get("/api/hosts/web-1/desired")["apps"]] == []
    assert [a["name"] for a in server.get("/api/apps")] == ["other"]

    # the name is free again, with nothing of the old app
    server.add_app("shop", tmp_path / "repo")
    assert server.get("/api/apps/shop/secrets") == []
    assert server.get("/api/runs?app=shop") == []
    assert server.get("/api/deployments?app=shop") == []

    unknown = server.cli("app", "remove", "nope")
    assert unknown.returncode == 2 and "unknown app 'nope'" in unknown.stderr


def test_only_an_admin_removes_an_app(server: ServerProcess, tmp_path: Path) -> None:
    server.add_app("shop", tmp_path)
    deployer = server.post("/api/tokens", {"name": "ci", "role": "deployer"})["token"]
    refused = server.cli("app", "remove", "shop", token=deployer)
    assert refused.returncode == 2 and "admin" in refused.stderr
    assert server.cli("app", "remove", "shop").returncode == 0  # nothing ran, nothing served
