"""`conveyor runner` end to end (README: Runners): real server, runner and agent processes.

The server listens on 127.0.71.1; runners connect from 127.0.71.2-3 (--bind); the
sample app's host is 127.0.71.11.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from testbed.fleet import Fleet
from tests.helpers import (
    ManagedProcess,
    ServerProcess,
    config,
    free_port,
    make_repo,
    wait_for,
)

SERVER = "127.0.71.1"
RUNNERS = ("127.0.71.2", "127.0.71.3")
HOST = {"web-1": "127.0.71.11"}


class RunnerProcess(ManagedProcess):
    """`conveyor runner` as a real process."""

    def __init__(self, server: ServerProcess, token: str, name: str, tmp: Path, **kw: Any) -> None:
        self.server, self.token, self.name = server, token, name
        self.labels: str = kw.get("labels", "")
        self.urls: str = kw.get("urls", server.url)
        self.bind: str = kw.get("bind", RUNNERS[0])
        self.work = tmp / f"runner-{name}"
        self.log_path = tmp / f"runner-{name}.log"

    def start(self) -> RunnerProcess:
        args = [sys.executable, "-m", "conveyor", "runner", "--server", self.urls]
        args += ["--name", self.name, "--labels", self.labels, "--work", str(self.work)]
        args += ["--bind", self.bind]
        self.spawn(args, {**os.environ, "CONVEYOR_TOKEN": self.token})
        return self


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data", host=SERVER).start()
    try:
        yield proc
    finally:
        proc.stop()
        proc.http.close()


@pytest.fixture
def runners(server: ServerProcess, tmp_path: Path) -> Iterator[Any]:
    """Start runners with a runner token made by the admin's CLI; all stopped after."""
    made = server.cli("token", "create", "runners", "--role", "runner", "--json")
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)["token"]
    started: list[RunnerProcess] = []

    def start(name: str, labels: str = "", bind: str = RUNNERS[0], **kw: Any) -> RunnerProcess:
        runner = RunnerProcess(server, token, name, tmp_path, labels=labels, bind=bind, **kw)
        started.append(runner.start())
        return runner

    start.token = token  # type: ignore[attr-defined]
    try:
        yield start
    finally:
        for runner in started:
            runner.stop()


def live(server: ServerProcess, *names: str) -> bool:
    """These runners have asked the server for work lately (they are up)."""
    up = {r["name"] for r in server.get("/api/runners") if r["live"]}
    return set(names) <= up


def serving(fleet: Fleet) -> str | None:
    try:
        return fleet.serving("web-1")
    except httpx.HTTPError:  # the router does not listen yet
        return None


def log_of(server: ServerProcess, run_id: int) -> str:
    return "".join(chunk["text"] for chunk in server.get(f"/api/runs/{run_id}/logs"))


@pytest.mark.slow
def test_a_runner_runs_the_steps_and_its_release_deploys(
    server: ServerProcess, runners: Any, tmp_path: Path
) -> None:
    runners("r1", labels="linux", bind=RUNNERS[0])
    fleet = Fleet(server, tmp_path, HOST)
    try:
        fleet.start()
        env = "runs_on: [linux]\nenvironments:\n  production:\n    hosts: [web-1]\n"
        fleet.commit("v1", env)
        run = server.wait_run(server.post("/api/apps/sample/runs", {})["id"], 180)
        assert run["state"] == "succeeded", (run, log_of(server, run["id"]))
        assert run["runner"] == "r1"
        text = log_of(server, run["id"])
        assert "on runner r1" in text and "checked on upload" in text
        # the server refused nothing and stored what the runner built: its served bytes hash
        release = server.get(f"/api/releases/{run['release']}")
        served = server.http.get(f"/api/releases/{release['id']}/artifact")
        assert hashlib.sha256(served.content).hexdigest() == release["sha256"]
        # the agent verified that digest too, and serves the release
        wait_for(lambda: serving(fleet) == release["id"], timeout=180, interval=0.5)
    finally:
        fleet.stop_everything()


def test_labels_are_respected_and_secrets_masked(
    server: ServerProcess, runners: Any, tmp_path: Path
) -> None:
    extra = "service: {start: 'true', port: 18000, secrets: [API_KEY]}\nruns_on: [big]\n"
    repo = tmp_path / "repo"
    make_repo(repo, {"conveyor.yml": config("shop", ['echo "key is $API_KEY"'], [], extra)})
    server.add_app("shop", repo)
    put = server.http.put("/api/apps/shop/secrets/API_KEY", json={"value": "s3cr3t-value"})
    assert put.status_code == 204, put.text
    runners("small", bind=RUNNERS[0])
    run_id = server.post("/api/apps/shop/runs", {})["id"]

    def waiting() -> Any:
        run = server.get(f"/api/runs/{run_id}")
        return run if "waiting for a runner with labels big" in (run["reason"] or "") else None

    run = wait_for(waiting, timeout=60)
    assert run["state"] == "running" and run["runner"] is None
    runners("large", labels="big,linux", bind=RUNNERS[1])
    run = server.wait_run(run_id, 120)
    assert run["state"] == "succeeded", (run, log_of(server, run_id))
    assert run["runner"] == "large"
    text = log_of(server, run_id)
    assert "key is ***" in text and "s3cr3t-value" not in text


def test_a_corrupted_upload_is_refused_and_fails_the_run(
    server: ServerProcess, runners: Any, tmp_path: Path
) -> None:
    """A runner's upload whose bytes are not what it says it built (played over the API)."""
    repo = tmp_path / "repo"
    make_repo(repo, {"conveyor.yml": config("shop", ["true"], [])})
    server.add_app("shop", repo)
    token = runners.token
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
        hello = http.post("/api/runner/claim", json={"name": "fake", "wait": 0})
        assert hello.status_code == 204  # seen: the next run is handed to runners
        run_id = server.post("/api/apps/shop/runs", {})["id"]
        job = wait_for(
            lambda: (
                (r := http.post("/api/runner/claim", json={"name": "fake"})).status_code == 200
                and r.json()
            ),
            timeout=60,
        )
        assert job["run"] == run_id
        claim = {"X-Conveyor-Claim": f"fake/{job['attempt']}"}
        source = http.get(f"/api/runner/runs/{run_id}/source", headers=claim)
        assert source.status_code == 200 and source.content[:2] == b"\x1f\x8b"
        for step in job["steps"]:
            http.post(f"/api/runner/steps/{step['id']}/start", headers=claim)
            http.post(
                f"/api/runner/steps/{step['id']}/end", headers=claim, json={"state": "succeeded"}
            )
        built = b"the artifact the runner built"
        facts = {"sha256": hashlib.sha256(built).hexdigest(), "size": len(built), "files": 1}
        upload = http.put(
            f"/api/runner/runs/{run_id}/artifact",
            headers=claim | {"X-Conveyor-Artifact": json.dumps(facts)},
            content=b"the artifact, corrupted on the way",
        )
        assert upload.status_code == 422, upload.text
        assert "artifact upload refused" in upload.json()["detail"]
        # the run lost: any later report of the fake runner is refused
        late = http.post(f"/api/runner/runs/{run_id}/heartbeat", headers=claim)
        assert late.status_code == 409
    run = server.get(f"/api/runs/{run_id}")
    assert run["state"] == "failed"
    assert run["reason"].startswith("artifact upload refused") and facts["sha256"] in run["reason"]
    assert run["release"] is None
    # a viewer-level read is not a runner's business: the runner token reads nothing
    assert httpx.get(f"{server.url}/api/runs", headers=headers).status_code == 403


@pytest.mark.slow
def test_a_runner_killed_mid_step_has_its_run_retried_by_another(
    server: ServerProcess, runners: Any, tmp_path: Path
) -> None:
    mark, pid = tmp_path / "first-attempt", tmp_path / "step.pid"
    # the first attempt blocks (its runner is killed meanwhile); the retry passes
    step = f"if [ ! -e {mark} ]; then touch {mark}; echo $$ > {pid}; sleep 300; fi"
    repo = tmp_path / "repo"
    make_repo(repo, {"conveyor.yml": config("shop", [step], ["echo built > BUILT"])})
    server.add_app("shop", repo)
    first = {"r1": runners("r1", bind=RUNNERS[0]), "r2": runners("r2", bind=RUNNERS[1])}
    wait_for(lambda: live(server, "r1", "r2"), timeout=60)
    run_id = server.post("/api/apps/shop/runs", {})["id"]
    try:
        holder = wait_for(
            lambda: pid.exists() and server.get(f"/api/runs/{run_id}")["runner"], timeout=90
        )
        first[holder].kill()
        run = server.wait_run(run_id, 180)
        assert run["state"] == "succeeded", (run, log_of(server, run_id))
        assert run["attempt"] == 2 and run["runner"] == ({"r1", "r2"} - {holder}).pop()
        states = [(s["attempt"], s["kind"], s["state"]) for s in run["steps"]]
        assert (1, "test", "interrupted") in states
        assert server.get(f"/api/releases/{run['release']}")["sha256"]
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.killpg(int(pid.read_text()), signal.SIGKILL)


def test_a_failing_step_on_a_runner_fails_the_run_as_on_the_server_it_reaches(
    server: ServerProcess, runners: Any, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    steps = ["echo checking", "echo broken >&2; exit 3"]
    make_repo(repo, {"conveyor.yml": config("shop", steps, ["echo never"], "runs_on: [linux]\n")})
    server.add_app("shop", repo)
    # its first server does not answer (nothing listens there): it moves to the next
    dead = f"http://{SERVER}:{free_port(SERVER)}"
    runners("r1", labels="linux", urls=f"{dead},{server.url}")
    run = server.wait_run(server.post("/api/apps/shop/runs", {})["id"], 120)
    assert run["state"] == "failed" and run["runner"] == "r1"
    assert run["reason"] == "test step 'echo broken >&2; exit 3' failed (exit 3)"
    states = [(s["kind"], s["state"], s["exit_code"]) for s in run["steps"]]
    assert states == [
        ("checkout", "succeeded", None),
        ("test", "succeeded", 0),
        ("test", "failed", 3),
        ("build", "skipped", None),
        ("artifact", "skipped", None),
    ]
    assert "broken" in log_of(server, run["id"])


def test_an_aborted_run_stops_its_runner_s_step(
    server: ServerProcess, runners: Any, tmp_path: Path
) -> None:
    pid = tmp_path / "step.pid"
    repo = tmp_path / "repo"
    step = f"echo $$ > {pid}; sleep 300"
    make_repo(repo, {"conveyor.yml": config("shop", [step], [], "runs_on: [linux]\n")})
    server.add_app("shop", repo)
    runner = runners("r1", labels="linux")
    run_id = server.post("/api/apps/shop/runs", {})["id"]
    try:
        wait_for(pid.exists, timeout=120)
        aborted = server.post(f"/api/runs/{run_id}/abort")
        assert aborted["state"] == "cancelled", aborted
        # the runner hears it at its next heartbeat and stops the step's processes
        step_pid = int(pid.read_text())
        wait_for(lambda: not os.path.exists(f"/proc/{step_pid}"), timeout=60)
        assert runner.proc is not None and runner.proc.poll() is None  # it goes on
        assert server.get(f"/api/runs/{run_id}")["state"] == "cancelled"
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.killpg(int(pid.read_text()), signal.SIGKILL)
