"""`conveyor deploy / rollback / approve / status / history` against a real server and fleet."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fleet import Fleet
from tests.helpers import ServerProcess, wait_for

# several deployments each: generous on a starved machine, still a hang detector
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ACTIVE = ("queued", "waiting", "running", "rolling_back", "aborting")

WITH_APPROVAL = """
environments:
  staging:
    hosts: [stage-1]
    approval: required
  production:
    hosts: [web-1, web-2]
    strategy: rolling
    approval: required
    verify:
      - http: GET /healthz
"""

WITHOUT_APPROVAL = """
environments:
  staging:
    hosts: [stage-1]
  production:
    hosts: [web-1, web-2]
    strategy: rolling
"""


@pytest.fixture
def fleet(server: ServerProcess, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(
        server, tmp_path, {"web-1": "127.0.0.41", "web-2": "127.0.0.42", "stage-1": "127.0.0.43"}
    )
    try:
        yield f.start()
    finally:
        f.stop_everything()


@pytest.fixture
def solo(server: ServerProcess, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(server, tmp_path, {"solo-1": "127.0.0.44"})
    try:
        yield f.start()
    finally:
        f.stop_everything()


def background(server: ServerProcess, *args: str) -> subprocess.Popen[str]:
    """The CLI as `server.cli` runs it, left running while the test acts."""
    env = {
        **os.environ,
        "CONVEYOR_SERVER": server.url,
        "CONVEYOR_TOKEN": server.token,
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def build(fleet: Fleet, label: str, environments: str, **config: Any) -> tuple[int, str]:
    """Commit, run test and build; returns the run and its release."""
    fleet.commit(label, environments, **config)
    run = fleet.server.wait_run(fleet.server.post("/api/apps/sample/runs", {})["id"])
    assert run["state"] == "succeeded", run
    return int(run["id"]), str(run["release"])


def deployment(server: ServerProcess, env: str, *, states: tuple[str, ...], **match: Any) -> Any:
    """Until the newest deployment to `env` matching `match` is in one of `states`."""

    def found() -> Any:
        for d in server.get("/api/deployments", params={"app": "sample", "environment": env}):
            if all(d[k] == v for k, v in match.items()):
                return d if d["state"] in states else None
        return None

    return wait_for(found, timeout=90, interval=0.3)


def test_deploy_approve_rollback_status_and_history(fleet: Fleet) -> None:
    server = fleet.server
    run, v1 = build(fleet, "v1", WITH_APPROVAL)
    deployment(server, "staging", states=("waiting",), run=run)

    refused = server.cli("deploy", "sample", "production", "--release", v1)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"release {v1} has not passed staging" in refused.stderr
    assert "conveyor deploy sample staging" in refused.stderr

    approved = server.cli("approve", str(run))
    assert approved.returncode == 0, approved.stderr
    assert "approved by admin" in approved.stdout and "to staging" in approved.stdout
    deployment(server, "staging", states=("succeeded",), run=run)
    pipeline = deployment(server, "production", states=("waiting",), run=run)

    # The release already waits there: a deploy by hand is refused, naming what waits.
    twice = server.cli("deploy", "sample", "production")
    assert twice.returncode == 2, twice.stdout + twice.stderr
    assert (
        f"refused: release {v1} is already queued for production of sample: deployment "
        f"#{pipeline['id']} (waiting for approval: conveyor approve {run})"
    ) in twice.stderr
    assert server.cli("abort", "--deployment", str(pipeline["id"])).returncode == 0

    # A deploy by hand waits for approval too, says so, then shows each step as it goes.
    follow = background(server, "deploy", "sample", "production", "--follow")
    held = deployment(server, "production", states=("waiting",), trigger="api")
    assert held["release"] == v1
    # approved once the follower has shown the wait (it looks twice a second)
    printed: list[str] = []
    assert follow.stdout is not None
    reader = threading.Thread(target=printed.extend, args=(follow.stdout,), daemon=True)
    reader.start()
    wait_for(lambda: any("waiting for approval" in line for line in printed), timeout=30)
    assert server.cli("approve", str(run)).returncode == 0
    follow.wait(timeout=120)
    reader.join(timeout=10)
    assert follow.stderr is not None
    stdout, stderr = "".join(printed), follow.stderr.read()
    follow.stdout.close()
    follow.stderr.close()
    assert follow.returncode == 0, stdout + stderr
    assert f"waiting for approval: conveyor approve {run}" in stdout
    for line in ("step 1/3 batch 1/2: web-1", "step 2/3 batch 2/2: web-2", "step 3/3 verify"):
        assert line in stdout, stdout
    assert "web-2: " + v1 + " 100% (1/1 hosts)" in stdout
    assert "/healthz on web-2: 200 as expected" in stdout, stdout  # the checks' log lines
    assert f"deployment #{held['id']} succeeded" in stdout
    assert {fleet.serving(h) for h in ("web-1", "web-2")} == {v1}

    nothing = server.cli("approve", str(run))
    assert nothing.returncode == 2 and f"nothing of run {run} is waiting" in nothing.stderr

    run2, v2 = build(fleet, "v2", WITHOUT_APPROVAL)
    deployment(server, "production", states=("succeeded",), run=run2)
    assert fleet.serving("web-1") == v2

    back = server.cli("rollback", "sample", "production", "--follow", "--json")
    assert back.returncode == 0, back.stdout + back.stderr
    rolled = json.loads(back.stdout)
    assert rolled["kind"] == "rollback" and rolled["state"] == "succeeded"
    assert rolled["release"] == v1 and rolled["previous_release"] == v2
    assert f"switch 2 router(s) to {v1}" in back.stderr
    assert {fleet.serving(h) for h in ("web-1", "web-2")} == {v1}

    status = json.loads(server.cli("status", "sample", "--json").stdout)
    envs = {e["name"]: e for e in status[0]["environments"]}
    assert envs["production"]["release"] == v1 and envs["staging"]["release"] == v2
    production = {p["host"]: p for p in envs["production"]["hosts"]}
    assert set(production) == {"web-1", "web-2"}
    for place in production.values():
        assert place["desired"] == [{"release": v1, "weight": 100, "migrate": None}]
        live = {r["release"]: r["weight"] for r in place["observed"] if r["weight"]}
        assert live == {v1: 100}
    text = server.cli("status", "sample")
    assert text.returncode == 0
    assert "production" in text.stdout and f"#{rolled['id']} rollback {v1}" in text.stdout

    follow_status = background(server, "status", "sample", "--follow", "--json")
    try:
        assert follow_status.stdout is not None
        first = json.loads(follow_status.stdout.readline())
        assert first[0]["environments"][1]["name"] == "production"
        follow_status.send_signal(signal.SIGINT)
        try:
            follow_status.communicate(timeout=60)  # a loaded machine: the exit, not the answer
        except subprocess.TimeoutExpired:
            spy = shutil.which("py-spy")  # where it waits, when this machine has py-spy
            where = (
                subprocess.run(
                    [spy, "dump", "--pid", str(follow_status.pid)],
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout
                if spy
                else ""
            )
            raise AssertionError(f"status --follow ignored Ctrl-C:\n{where}") from None
        assert follow_status.returncode == 0
    finally:  # never left running: its pipes would fail a later test as unraisable
        follow_status.kill()
        follow_status.communicate()

    history = json.loads(server.cli("history", "sample", "production", "--json").stdout)
    rows = [(d["kind"], d["release"], d["state"], d["trigger"]) for d in history]
    assert rows == [
        ("rollback", v1, "succeeded", "rollback"),
        ("deploy", v2, "succeeded", "pipeline"),
        ("deploy", v1, "succeeded", "api"),
        ("deploy", v1, "cancelled", "pipeline"),
    ], rows
    assert history[2]["approved_by"].startswith("admin") and history[2]["duration"] > 0
    table = server.cli("history", "sample")
    assert table.returncode == 0
    for word in ("rollback", "cancelled", "staging", f"run {run2}", v2):
        assert word in table.stdout, table.stdout
    assert history[3]["reason"].startswith("aborted by admin"), history[3]
    runs = json.loads(server.cli("history", "sample", "--runs", "--json").stdout)
    assert [r["id"] for r in runs] == [run2, run]


def test_a_failing_release_exits_1_with_the_reason_and_rolls_back(solo: Fleet) -> None:
    server = solo.server
    production = "environments:\n  production:\n    hosts: [solo-1]\n"
    run, v1 = build(solo, "v1", production)
    deployment(server, "production", states=("succeeded",), run=run)

    # a closed window holds the pipeline's deployment; forcing it needs an admin and a reason
    day = (datetime.now(UTC) + timedelta(days=3)).strftime("%a")
    closed = production + f"    window: {day} 00:00-00:01 UTC\n"
    run2, v2 = build(solo, "v2", closed, health_status=500, health_timeout="3s")
    deployment(server, "production", states=("waiting",), run=run2)
    deployer = server.post("/api/tokens", {"name": "dev", "role": "deployer"})["token"]
    denied = server.cli(
        "deploy", "sample", "production", "--force", "--reason", "hotfix", token=deployer
    )
    assert denied.returncode == 2 and "needs an admin token" in denied.stderr
    no_reason = server.cli("deploy", "sample", "production", "--force")
    assert no_reason.returncode == 2 and "needs a reason" in no_reason.stderr

    failed = server.cli(
        "deploy",
        "sample",
        "production",
        "--release",
        v2,
        "--force",
        "--reason",
        "hotfix",
        "--follow",
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "failed: release " + v2 + " failed on solo-1" in failed.stdout, failed.stdout
    assert f"roll back 1 host(s) to {v1}: done" in failed.stdout
    assert solo.serving("solo-1") == v1

    history = json.loads(server.cli("history", "sample", "production", "--json").stdout)
    assert [(d["release"], d["state"]) for d in history] == [
        (v2, "failed"),
        (v2, "superseded"),
        (v1, "succeeded"),
    ]
    assert history[0]["forced_by"].startswith("admin") and history[0]["force_reason"] == "hotfix"
    assert "failed on solo-1" in history[0]["reason"]
    table = server.cli("history", "sample", "production").stdout
    assert "forced by" in table and "failed" in table
