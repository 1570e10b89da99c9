"""Contract migrations deployed for real (a server, an agent, its router, the sample app):
the contract waits while the previous release is kept warm and says so in status, runs by
itself (after the backup) once it went cold, and a rollback past it is refused; a failing
backup stops the contract, which the next deployment then tries as its first step. The
commands write to a file: what ran, in which order."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fleet import Fleet, running_fleet
from tests.helpers import ServerProcess, commit, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

HOSTS = {"web-1": "127.0.62.20"}

PLAIN = """
environments:
  production:
    hosts: [web-1]
    strategy: rolling
"""

CONTRACTING = """
migrations:
  contract: ./bin/migrate-contract
  backup: ./bin/backup
environments:
  production:
    hosts: [web-1]
    strategy: rolling
    env: {{RAN: '{ran}'}}
"""


@pytest.fixture
def fleet(server: ServerProcess, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(server, tmp_path, HOSTS) as f:
        yield f


def ended(server: ServerProcess, kind: str, release: str) -> Any:
    """The newest deployment of this kind and release once it ended."""

    def look() -> Any:
        found = [
            d
            for d in server.get("/api/deployments?app=sample")
            if d["kind"] == kind and d["release"] == release
        ]
        if found and found[0]["state"] not in ("queued", "waiting", "running", "rolling_back"):
            return server.get(f"/api/deployments/{found[0]['id']}")
        return None

    return wait_for(look, timeout=120, interval=0.3)


def contract_of(server: ServerProcess) -> Any:
    (env,) = server.get("/api/apps/sample/environments")
    return env["contract"]


def test_a_contract_waits_for_the_old_release_to_go_cold_then_runs_after_its_backup(
    fleet: Fleet, tmp_path: Path
) -> None:
    server = fleet.server
    ran = tmp_path / "ran.log"

    def push(label: str, environments: str, backup: str = "exit 0") -> Any:
        scripts = {
            "bin/backup": f'#!/bin/sh\necho "backup $CONVEYOR_RELEASE" >> "$RAN"\n{backup}\n',
            "bin/migrate-contract": '#!/bin/sh\necho "contract $CONVEYOR_RELEASE" >> "$RAN"\n',
        }
        commit(fleet.repo, scripts, executable=tuple(scripts))
        fleet.commit(label, environments.format(ran=ran), keep_warm="8s")
        run = server.wait_run(server.post("/api/apps/sample/runs", {})["id"])
        assert run["state"] == "succeeded", run
        return ended(server, "deploy", run["release"])

    v1 = push("v1", PLAIN)
    assert v1["state"] == "succeeded", v1
    v2 = push("v2", CONTRACTING)
    assert v2["state"] == "succeeded", v2
    assert "contract" not in [s["kind"] for s in v2["steps"]]

    # v1 drains, then stays warm for 8 s: the contract says it waits for it, naming the host
    waiting = contract_of(server)
    assert waiting["release"] == v2["release"], waiting
    if waiting["waiting"] is not None:  # (a very slow look may come after v1 went cold)
        assert f"release {v1['release']} (kept warm on web-1" in waiting["waiting"], waiting
        shown = server.cli("status", "sample")
        assert "contract pending" in " ".join(shown.stdout.split()), shown.stdout
        ca = ssl.create_default_context(cafile=str(server.ca)) if server.ca else True
        with httpx.Client(base_url=server.url, verify=ca) as web:
            web.post("/login", data={"token": server.token})
            page = web.get("/apps/sample/environments/production").text
        assert f"contract migration of <code>{v2['release']}</code> pending" in page, page[-3000:]

    applied = ended(server, "contract", v2["release"])
    assert applied["state"] == "succeeded", applied
    assert [s["kind"] for s in applied["steps"]] == ["contract"]
    assert ran.read_text() == f"backup {v2['release']}\ncontract {v2['release']}\n"
    assert contract_of(server) is None
    assert fleet.serving("web-1") == v2["release"]
    phases = {r["release"]: r["phase"] for r in fleet.agents["web-1"].app("sample")["releases"]}
    assert phases.get(v1["release"], "stopped") in ("stopped", "failed"), phases

    refused = server.http.post(
        "/api/apps/sample/environments/production/rollback", json={"to": v1["release"]}
    )
    assert refused.status_code == 409, refused.text
    assert f"the contract migration of release {v2['release']} has been applied" in refused.text
    assert "deploy a fix forward" in refused.text
    older = server.http.post(
        "/api/apps/sample/environments/production/deploy", json={"release": v1["release"]}
    )
    assert older.status_code == 409, older.text
    assert f"the contract migration of release {v2['release']} has been applied" in older.text

    # a failing backup: the contract of v3 does not run, and the failure says why
    v3 = push("v3", CONTRACTING, backup="exit 3")
    assert v3["state"] == "succeeded", v3
    failed = ended(server, "contract", v3["release"])
    assert failed["state"] == "failed", failed
    assert "migrations.contract failed on web-1 (exit 3)" in failed["reason"], failed["reason"]
    assert "migrations.backup failed" in failed["reason"], failed["reason"]
    assert ran.read_text().endswith(f"backup {v3['release']}\n")
    assert fleet.serving("web-1") == v3["release"]
    pending = contract_of(server)
    assert pending == {
        "release": v3["release"],
        "command": "./bin/migrate-contract",
        "waiting": None,
    }, pending

    # not retried by itself: the next deployment takes it as its first step (from v3's
    # files, whose backup still fails): that deployment fails there, nothing moved
    v4 = push("v4", CONTRACTING)
    assert v4["state"] == "failed", v4
    assert v4["steps"][0]["kind"] == "contract", v4["steps"]
    assert "migrations.contract failed on web-1 (exit 3)" in v4["reason"], v4["reason"]
    assert fleet.serving("web-1") == v3["release"]


def test_a_deployment_waiting_while_the_contract_became_due_applies_it_as_its_first_step(
    fleet: Fleet, tmp_path: Path
) -> None:
    """The success path of a contract taken by the next deployment: that deployment was
    waiting (for approval) when the old release went cold, so no contract deployment
    could start by itself; once approved, it applies the contract first, then moves."""
    server = fleet.server
    ran = tmp_path / "ran.log"
    approval = "    approval: required\n"
    scripts = {
        "bin/backup": '#!/bin/sh\necho "backup $CONVEYOR_RELEASE" >> "$RAN"\n',
        "bin/migrate-contract": '#!/bin/sh\necho "contract $CONVEYOR_RELEASE" >> "$RAN"\n',
    }
    commit(fleet.repo, scripts, executable=tuple(scripts))

    def push(label: str, environments: str) -> Any:
        fleet.commit(label, environments.format(ran=ran) + approval, keep_warm="30s")
        run = server.wait_run(server.post("/api/apps/sample/runs", {})["id"])
        assert run["state"] == "succeeded", run
        return run

    v1 = push("v1", PLAIN)
    server.post(f"/api/runs/{v1['id']}/approve")
    assert ended(server, "deploy", v1["release"])["state"] == "succeeded"
    v2 = push("v2", CONTRACTING)
    server.post(f"/api/runs/{v2['id']}/approve")
    # v3 (its conveyor.yml without the contract key) waits for approval behind v2
    v3 = push("v3", PLAIN)
    assert ended(server, "deploy", v2["release"])["state"] == "succeeded"
    queued = [d for d in server.get("/api/deployments?app=sample") if d["run"] == v3["id"]]
    assert [d["state"] for d in queued] == ["waiting"], queued

    # v1 goes cold; the contract may run, but the environment has v3 waiting: no
    # contract deployment starts by itself, status says it is due
    def due() -> Any:
        found = contract_of(server)
        return found if found and found["waiting"] is None else None

    assert wait_for(due, timeout=120, interval=0.5)["release"] == v2["release"]
    waiting = [d for d in server.get("/api/deployments?app=sample") if d["kind"] == "contract"]
    assert waiting == [], waiting

    server.post(f"/api/runs/{v3['id']}/approve")
    done = ended(server, "deploy", v3["release"])
    assert done["state"] == "succeeded", done
    first = done["steps"][0]
    assert (first["kind"], first["state"]) == ("contract", "succeeded"), done["steps"]
    assert first["name"] == f"contract of {v2['release']} on web-1", first
    assert [s["kind"] for s in done["steps"][1:]] and "contract" not in [
        s["kind"] for s in done["steps"][1:]
    ]
    assert ran.read_text() == f"backup {v2['release']}\ncontract {v2['release']}\n"
    assert fleet.serving("web-1") == v3["release"]
    assert contract_of(server) is None  # applied; v3 brings none
    kinds = [d["kind"] for d in server.get("/api/deployments?app=sample")]
    assert "contract" not in kinds, kinds
    refused = server.http.post(
        "/api/apps/sample/environments/production/rollback", json={"to": v1["release"]}
    )
    assert refused.status_code == 409, refused.text
    assert f"the contract migration of release {v2['release']} has been applied" in refused.text
