"""The typed API client reads the server's answers, and gives back the very JSON they were.

The CLI prints `wire(model)` for --json: it must be the server's own answer, field for
field and in its order, for every kind of answer the CLI reads.
"""

from __future__ import annotations

import json
from pathlib import Path

from conveyor.client import Client, wire
from conveyor.protocol import DoraReport
from tests.helpers import ServerProcess, config, make_repo


def same_json(typed: object, raw: object) -> None:
    assert json.dumps(wire(typed), indent=2) == json.dumps(raw, indent=2)  # type: ignore[arg-type]


def test_typed_answers_are_the_servers_json(server: ServerProcess, tmp_path: Path) -> None:
    with server.api() as api:
        check_answers(server, api, tmp_path)


def check_answers(server: ServerProcess, api: Client, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_repo(repo, {"conveyor.yml": config("shop", ["true"])})
    created = api.add_app({"name": "shop", "repo": str(repo), "branch": "main"})
    assert created.name == "shop" and created.webhooks.github.endswith("/github/shop")
    host = api.add_host("web-1")
    assert host.enrolment_token and not host.online
    token = api.create_token("reader", "viewer")
    assert token.role == "viewer"

    run = api.start_run("shop", None)
    finished = server.wait_run(run.id)
    assert finished["state"] == "succeeded"

    same_json(api.apps(), server.get("/api/apps"))
    same_json(api.hosts(), server.get("/api/hosts"))
    same_json(api.host("web-1"), server.get("/api/hosts/web-1"))
    same_json(api.tokens(), server.get("/api/tokens"))
    same_json(api.status(), server.get("/api/status"))
    same_json(api.status("shop"), server.get("/api/status", params={"app": "shop"}))
    same_json(api.run(run.id), server.get(f"/api/runs/{run.id}"))
    same_json(api.runs("shop", 5), server.get("/api/runs", params={"app": "shop", "limit": 5}))
    same_json(api.run_logs(run.id), server.get(f"/api/runs/{run.id}/logs"))
    assert api.dora("shop", 30).app == "shop"  # its window ends now: parse one answer
    raw_dora = server.get("/api/apps/shop/dora", params={"days": 30})
    same_json(DoraReport.model_validate(raw_dora), raw_dora)
    same_json(
        api.deployments("shop", None, 5),
        server.get("/api/deployments", params={"app": "shop", "limit": 5}),
    )
    assert api.secrets("shop") == []
