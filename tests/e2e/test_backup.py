"""Backup and restore for real: a backup taken during a deployment, restored into a new data
dir, served on another address: status and history match, re-pointed agents converge."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from conveyor.server.backup import known_revisions
from tests.fleet import Fleet
from tests.helpers import ServerProcess, run_cli, wait_for

pytestmark = pytest.mark.timeout(300)

HOSTS = {"web-1": "127.0.46.21", "web-2": "127.0.46.22"}
SECRET = "Bk3-restored-secret-value"
ENVIRONMENTS = """
environments:
  production:
    hosts: [web-1, web-2]
    strategy: canary
    steps: [50, 100]
    step_pause: 3s
"""
SECRETS = "  secrets: [API_KEY]\n"
ENDED = ("succeeded", "failed", "rolled_back", "cancelled", "superseded")


def _history(server: ServerProcess) -> list[tuple[Any, ...]]:
    done = server.cli("history", "sample", "--json")
    assert done.returncode == 0, done.stderr
    keys = ("id", "environment", "release", "state", "kind", "trigger", "run")
    return [tuple(d[k] for k in keys) for d in json.loads(done.stdout)]


def _status(server: ServerProcess) -> list[tuple[Any, ...]]:
    done = server.cli("status", "sample", "--json")
    assert done.returncode == 0, done.stderr
    (app,) = json.loads(done.stdout)
    return [
        (
            env["name"],
            env["release"],
            env["last"]["id"] if env["last"] else None,
            [(h["host"], h["converged"], h["desired"]) for h in env["hosts"]],
        )
        for env in app["environments"]
    ]


PRODUCTION = "/api/apps/sample/environments/production"


def _paused(server: ServerProcess) -> bool:
    """Pause the canary step once there is one (409 before it starts)."""
    answer = server.http.post(f"{PRODUCTION}/pause", json={})
    assert answer.status_code in (200, 409), answer.text
    return answer.status_code == 200


def _deployment(server: ServerProcess, run: int) -> Any:
    found = [d for d in server.get("/api/deployments?app=sample") if d["run"] == run]
    return found[0] if found else {"state": None}


def _push(fleet: Fleet, label: str) -> int:
    fleet.commit(label, SECRETS + ENVIRONMENTS)
    return int(fleet.server.post("/api/apps/sample/runs", {})["id"])


@pytest.mark.slow  # three servers' worth of deployments: about a minute
def test_a_backup_taken_during_a_deployment_restores_on_another_address(
    server: ServerProcess, tmp_path: Path
) -> None:
    fleet = Fleet(server, tmp_path, HOSTS)
    restored: ServerProcess | None = None
    try:
        fleet.start()
        with server.api() as api:
            api.set_secret("sample", "API_KEY", SECRET)
        first = _push(fleet, "v1")
        wait_for(lambda: _deployment(server, first)["state"] == "succeeded", timeout=120)
        second = _push(fleet, "v2")
        # held at its canary step while the backup is taken: on a loaded machine the backup
        # took longer than the deployment once
        wait_for(lambda: _paused(server), timeout=120)

        archive = tmp_path / "backup.tar"
        done = run_cli("backup", str(archive), "--data", str(server.data))
        assert done.returncode == 0, done.stderr
        assert _deployment(server, second)["state"] == "running"  # taken during it
        server.post(f"{PRODUCTION}/resume")
        assert archive.stat().st_mode & 0o777 == 0o600
        with tarfile.open(archive) as tar:
            names = tar.getnames()
            manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert names[:3] == ["manifest.json", "conveyor.db", "secrets.key"]
        assert any(n.startswith("data/artifacts/") for n in names)
        assert any(n.startswith("data/logs/") for n in names)
        assert not any(n.startswith(("data/repos/", "data/work/")) for n in names)  # caches
        assert manifest["schema_revision"] == known_revisions()[-1]
        assert manifest["database"] == "sqlite"
        assert manifest["conveyor_version"]

        # the old server finishes; then it and the agents stop (their instances go on)
        wait_for(lambda: _deployment(server, second)["state"] in ENDED, timeout=120)
        assert _deployment(server, second)["state"] == "succeeded"
        history, status = _history(server), _status(server)
        server.stop()
        server.http.close()
        for agent in fleet.agents.values():
            agent.stop()

        data = tmp_path / "restored"
        done = run_cli("restore", str(archive), "--data", str(data))
        assert done.returncode == 0, done.stderr
        assert (data / "secrets.key").stat().st_mode & 0o777 == 0o600
        restored = ServerProcess(data).start()
        assert restored.url != server.url
        fleet.server = restored
        for agent in fleet.agents.values():  # re-pointed: its credential, a new --server
            agent.server, agent.enrolment = restored, None
            agent.launch()
        # the restored server carries on with the deployment the backup caught (paused
        # then: it is resumed there too), with its hosts
        restored.post(f"{PRODUCTION}/resume")
        wait_for(lambda: _deployment(restored, second)["state"] in ENDED, timeout=120)
        try:
            wait_for(lambda: all(p[3] and all(h[1] for h in p[3]) for p in _status(restored)))
        except AssertionError:
            print(json.dumps(restored.get("/api/status?app=sample"), indent=1)[:6000])
            print(_deployment(restored, second))
            print(restored.log()[-5000:])
            raise
        assert _history(restored) == history
        assert _status(restored) == status
        v2 = _deployment(restored, second)["release"]
        for name in HOSTS:
            assert fleet.serving(name) == v2
        # secrets came along: the resumed steps and the agents' desired states opened them
        with restored.api() as api:
            listed = api.secrets("sample")
        assert [(s.name, s.environment) for s in listed] == [("API_KEY", None)]
    finally:
        fleet.stop_everything()
        if restored is not None:
            restored.stop()
            restored.http.close()


def test_restore_refuses_a_newer_schema_a_used_dir_and_what_is_no_backup(
    server: ServerProcess, tmp_path: Path
) -> None:
    archive = tmp_path / "b.tar"
    assert run_cli("backup", str(archive), "--data", str(server.data)).returncode == 0
    newer = tmp_path / "newer.tar"
    with tarfile.open(archive) as src, tarfile.open(newer, "w") as dst:
        for member in src.getmembers():
            body = src.extractfile(member)
            if member.name == "manifest.json":
                assert body is not None
                manifest = json.load(body)
                manifest.update(schema_revision="0042", conveyor_version="9.0.0")
                raw = json.dumps(manifest).encode()
                member.size = len(raw)
                dst.addfile(member, io.BytesIO(raw))
            else:
                dst.addfile(member, body)
    refused = run_cli("restore", str(newer), "--data", str(tmp_path / "fresh"))
    assert refused.returncode == 2
    assert "taken by conveyor 9.0.0 (schema revision 0042" in refused.stderr
    assert "restore it with conveyor 9.0.0 or newer" in refused.stderr
    assert not (tmp_path / "fresh").exists()

    used = run_cli("restore", str(archive), "--data", str(server.data))
    assert used.returncode == 2 and "is not empty" in used.stderr
    junk = tmp_path / "junk.tar"
    junk.write_bytes(hashlib.sha256(b"x").digest())
    bad = run_cli("restore", str(junk), "--data", str(tmp_path / "fresh2"))
    assert bad.returncode == 2 and "cannot read" in bad.stderr
    ok = run_cli("restore", str(archive), "--data", str(tmp_path / "fresh3"))
    assert ok.returncode == 0, ok.stderr
