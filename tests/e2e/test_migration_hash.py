"""A production expand runs only after the same migration, by content hash, succeeded on
staging: deployed for real (a server, two agents with their routers, the sample app).

The artifact leaves conveyor.yml out (`artifact.include`), so a commit changing only the
expand command builds the same bytes as the release staging already ran: the artifact
gate lets that release into production, the migration's hash does not, until its own
expand succeeded on staging. The command writes what ran, per environment, to a file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.demo.sample import sample_config
from tests.fleet import Fleet, running_fleet
from tests.helpers import ServerProcess, commit, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

HOSTS = {"web-1": "127.0.62.30", "web-2": "127.0.62.31"}

ENVIRONMENTS = """
migrations:
  expand: ./bin/migrate {word}
environments:
  staging:
    hosts: [web-1]
    strategy: rolling
    approval: required
    env: {{RAN: '{ran}/staging.log'}}
  production:
    hosts: [web-2]
    strategy: rolling
    env: {{RAN: '{ran}/production.log'}}
"""


@pytest.fixture
def fleet(server: ServerProcess, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(server, tmp_path, HOSTS) as f:
        yield f


def ended(server: ServerProcess, env: str, release: str) -> Any:
    def look() -> Any:
        found = [
            d
            for d in server.get("/api/deployments?app=sample")
            if d["environment"] == env and d["release"] == release
        ]
        if found and found[0]["state"] not in ("queued", "waiting", "running", "rolling_back"):
            return server.get(f"/api/deployments/{found[0]['id']}")
        return None

    return wait_for(look, timeout=120, interval=0.3)


def test_a_production_expand_waits_for_the_same_migration_to_succeed_on_staging(
    fleet: Fleet, tmp_path: Path
) -> None:
    server = fleet.server
    ran = tmp_path / "ran"
    ran.mkdir()
    script = '#!/bin/sh\necho "$1 $CONVEYOR_RELEASE" >> "$RAN"\n'
    commit(fleet.repo, {"bin/migrate": script}, executable=("bin/migrate",))

    def push(word: str) -> tuple[Any, Any]:
        text = sample_config("sample", port=fleet.port, keep_warm="0s")
        text = text.replace('include: ["."]\n  exclude: ["tests/"]', 'include: ["app", "bin"]')
        text += ENVIRONMENTS.format(word=word, ran=ran)
        commit(fleet.repo, {"conveyor.yml": text})
        run = server.wait_run(server.post("/api/apps/sample/runs", {})["id"])
        assert run["state"] == "succeeded", run
        return run, server.get(f"/api/releases/{run['release']}")

    def migrated(env: str) -> str:
        log = ran / f"{env}.log"
        return log.read_text() if log.exists() else ""

    # the normal path: approved on staging, its expand runs there, then in production
    run1, v1 = push("one")
    assert v1["migration_hash"], v1
    server.post(f"/api/runs/{run1['id']}/approve")
    for env in ("staging", "production"):
        done = ended(server, env, v1["id"])
        assert done["state"] == "succeeded", done
        (step,) = [s for s in done["steps"] if s["kind"] == "migrate"]
        assert step["migration_hash"] == v1["migration_hash"], step
        assert migrated(env) == f"one {v1['id']}\n"

    # the same bytes, another expand: the artifact gate passes it, the migration's does not
    run2, v2 = push("two")
    assert v2["sha256"] == v1["sha256"], (v1, v2)
    assert v2["migration_hash"] not in (None, v1["migration_hash"]), (v1, v2)
    refused = server.http.post(
        "/api/apps/sample/environments/production/deploy", json={"release": v2["id"]}
    )
    assert refused.status_code == 409, refused.text
    why = refused.json()["detail"]
    assert (
        f"the expand migration of release {v2['id']} (migration {v2['migration_hash'][:12]}) "
        "has not succeeded on staging" in why
    ), why
    assert f"Deploy release {v2['id']} to staging first" in why, why
    shown = server.cli("deploy", "sample", "production", "--release", v2["id"])
    assert shown.returncode == 2, (shown.stdout, shown.stderr)
    assert "has not succeeded on staging" in " ".join(shown.stderr.split()), shown.stderr
    assert migrated("production") == f"one {v1['id']}\n"
    assert fleet.serving("web-2") == v1["id"]

    # once it succeeded on staging, the chain takes it to production
    server.post(f"/api/runs/{run2['id']}/approve")
    for env in ("staging", "production"):
        done = ended(server, env, v2["id"])
        assert done["state"] == "succeeded", done
        (step,) = [s for s in done["steps"] if s["kind"] == "migrate"]
        assert step["migration_hash"] == v2["migration_hash"], step
        assert migrated(env) == f"one {v1['id']}\ntwo {v2['id']}\n"
    assert fleet.serving("web-2") == v2["id"]
