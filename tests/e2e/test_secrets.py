"""Secrets for real: per-environment values reach the right hosts, and nothing at rest or
in any log (server, agents, app instances) holds a value."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fleet import Fleet, running_fleet
from tests.helpers import ServerProcess, commit, wait_for

pytestmark = pytest.mark.timeout(300)

HOSTS = {"stage-1": "127.0.46.11", "prod-1": "127.0.46.12"}

ENVY_PY = '''\
"""Answers /env with a sha256 of each secret it got (never the value) and LOG_LEVEL."""
import contextlib
import hashlib
import json
import os
import signal
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def digest(name):
    return hashlib.sha256(os.environ.get(name, "").encode()).hexdigest()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/env":
            seen = {n: digest(n) for n in ("DATABASE_URL", "API_TOKEN", "REGION_KEY")}
            seen["LOG_LEVEL"] = os.environ.get("LOG_LEVEL", "")
            body = json.dumps(seen).encode()
        else:
            body = b"ok"
        print("served", self.path, flush=True)  # an app log, with no secret in it
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
'''

CONFIG = """\
app: sample
test:
  - run: echo "the shared url is $DATABASE_URL"
build: []
service:
  start: python3 envy.py
  port: {port}
  health: {{path: /healthz, interval: 1s}}
  drain: 1s
  env: {{LOG_LEVEL: info}}
  secrets:
    - DATABASE_URL
    - API_TOKEN
    - REGION_KEY: {{command: "printf 'rk-%s-Jm8' $CONVEYOR_ENVIRONMENT"}}
environments:
  staging:
    hosts: [stage-1]
    env: {{LOG_LEVEL: debug}}
  production:
    hosts: [prod-1]
"""

SHARED_URL = "postgres://shared:Zq7-shared-pw@db/shop"
PROD_URL = "postgres://prod:Xk9-prod-only-pw@db/shop"
# the command's output: tok-staging-Wv3 / tok-production-Wv3 (the command text holds neither)
TOKEN_COMMAND = "printf 'tok-%s-Wv3\\n' \"$CONVEYOR_ENVIRONMENT\""


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.fixture
def fleet(server: ServerProcess, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(server, tmp_path, HOSTS) as f:
        yield f


def deployed(server: ServerProcess, run: int, env: str) -> Any:
    def ended() -> Any:
        found = [
            d
            for d in server.get("/api/deployments?app=sample")
            if d["run"] == run and d["environment"] == env
        ]
        if found and found[0]["state"] not in ("queued", "waiting", "running", "rolling_back"):
            return found[0]
        return None

    return wait_for(ended, timeout=120, interval=0.3)


@pytest.mark.slow  # two hosts, three deployments
def test_each_environment_gets_its_own_values_and_no_file_or_log_holds_one(
    fleet: Fleet, tmp_path: Path
) -> None:
    server = fleet.server
    set_secret = ["secret", "set", "sample"]
    assert server.cli(*set_secret, "DATABASE_URL", input=SHARED_URL + "\n").returncode == 0
    done = server.cli(*set_secret, "DATABASE_URL", "--env", "production", input=PROD_URL)
    assert done.returncode == 0, done.stderr
    done = server.cli(*set_secret, "API_TOKEN", "--command", TOKEN_COMMAND)
    assert done.returncode == 0, done.stderr
    listed = server.cli("secret", "list", "sample", "--json")
    assert json.loads(listed.stdout) == [
        {"name": "API_TOKEN", "environment": None, "kind": "command"},
        {"name": "DATABASE_URL", "environment": None, "kind": "value"},
        {"name": "DATABASE_URL", "environment": "production", "kind": "value"},
    ]

    commit(fleet.repo, {"envy.py": ENVY_PY, "conveyor.yml": CONFIG.format(port=fleet.port)})
    run = server.wait_run(server.post("/api/apps/sample/runs", {})["id"])
    assert run["state"] == "succeeded", run
    staging = deployed(server, run["id"], "staging")
    assert staging["state"] == "succeeded", staging["reason"]
    assert deployed(server, run["id"], "production")["state"] == "succeeded"

    def env_of(host: str) -> Any:
        url = f"http://{HOSTS[host]}:{fleet.port}/env"
        return httpx.get(url, timeout=10).json()

    assert env_of("stage-1") == {
        "DATABASE_URL": sha(SHARED_URL),
        "API_TOKEN": sha("tok-staging-Wv3"),
        "REGION_KEY": sha("rk-staging-Jm8"),
        "LOG_LEVEL": "debug",
    }
    assert env_of("prod-1") == {
        "DATABASE_URL": sha(PROD_URL),
        "API_TOKEN": sha("tok-production-Wv3"),
        "REGION_KEY": sha("rk-production-Jm8"),
        "LOG_LEVEL": "info",
    }
    logs = server.get(f"/api/runs/{run['id']}/logs")
    assert "the shared url is ***" in "".join(c["text"] for c in logs)

    # the server's data dir (database, WAL, run logs, artifacts), its log, the agents'
    # data dirs (state, desired state, instance logs) and their logs: no value anywhere
    values = [SHARED_URL, PROD_URL, "tok-staging-Wv3", "tok-production-Wv3"]
    values += ["rk-staging-Jm8", "rk-production-Jm8"]
    searched = 0
    for path in tmp_path.rglob("*"):
        if path.is_file() and fleet.repo not in path.parents:
            data = path.read_bytes()
            searched += 1
            for value in values:
                assert value.encode() not in data, (path, value)
    agent_data = tmp_path / "prod-1"
    assert (agent_data / "agent.key").stat().st_mode & 0o777 == 0o600
    assert (server.data / "secrets.key").stat().st_mode & 0o777 == 0o600
    state = json.loads((agent_data / "agent-state.json").read_text())
    assert state["instances"] and all("env_sealed" in i for i in state["instances"])
    print(f"{searched} files searched for {len(values)} secret values: none found")

    # deleting production's own value: production falls back to the shared one
    gone = server.cli("secret", "delete", "sample", "DATABASE_URL", "--env", "production")
    assert gone.returncode == 0, gone.stderr
    again = server.cli("secret", "delete", "sample", "DATABASE_URL", "--env", "production")
    assert again.returncode == 2 and "no secret 'DATABASE_URL'" in again.stderr
    # (a running instance keeps the env it started with: the next release gets the change)
    commit(fleet.repo, {"VERSION": "2"})
    second = server.wait_run(server.post("/api/apps/sample/runs", {})["id"])
    assert deployed(server, second["id"], "production")["state"] == "succeeded"
    assert env_of("prod-1")["DATABASE_URL"] == sha(SHARED_URL)

    # kill -9 recovery without the server: the agent and its instances die, the server is
    # down; the agent started again restarts the instances with the env it kept sealed
    before = env_of("prod-1")
    server.stop()
    agent = fleet.agents["prod-1"]
    agent.kill()
    state = json.loads((agent_data / "agent-state.json").read_text())
    for item in state["instances"]:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(item["pgid"], signal.SIGKILL)
    agent.launch()

    def answers() -> Any:
        try:  # the router answers 502 (not JSON) until the instance is back
            return env_of("prod-1")
        except (httpx.HTTPError, ValueError):
            return None

    assert wait_for(answers, timeout=60) == before


def test_a_failing_secret_command_fails_the_deployment_without_showing_its_output(
    server: ServerProcess, tmp_path: Path
) -> None:
    from tests.helpers import make_repo

    leaked = "Hx8-would-be-secret-output"
    repo = tmp_path / "repo"
    config = (
        "app: vaulty\ntest: []\nbuild: []\n"
        "service:\n  start: python3 -m http.server $PORT\n  port: 8000\n  secrets: [TOKEN]\n"
        "environments:\n  production:\n    hosts: [nowhere-1]\n"
    )
    make_repo(repo, {"conveyor.yml": config})
    server.add_app("vaulty", repo)
    command = f"echo {leaked}; echo {leaked} >&2; exit 3"
    done = server.cli(
        "secret", "set", "vaulty", "TOKEN", "--env", "production", "--command", command
    )
    assert done.returncode == 0, done.stderr
    run = server.wait_run(server.post("/api/apps/vaulty/runs", {})["id"])
    assert run["state"] == "succeeded", run
    failed = deployed_app(server, "vaulty", run["id"], "production")
    assert failed["state"] == "failed"
    assert failed["reason"] == (
        "the command of secret TOKEN exited with status 3 (its output is not shown: it may "
        "hold the secret); nothing changed"
    )
    assert leaked not in server.log()

    # a secret with no value at all: refused before anything acts, saying how to set it
    assert server.cli("secret", "delete", "vaulty", "TOKEN", "--env", "production").returncode == 0
    again = server.post(
        "/api/apps/vaulty/environments/production/deploy", {"release": run["release"]}
    )
    ended = wait_for(
        lambda: (d := server.get(f"/api/deployments/{again['id']}"))["state"] == "failed" and d,
        timeout=60,
    )
    assert ended["reason"] == (
        f"release {run['release']} needs secrets not set on the server for environment "
        "production: TOKEN (conveyor secret set vaulty NAME --env production; a secret from "
        "a command gets its value when a deployment runs it); nothing changed"
    )


def deployed_app(server: ServerProcess, app: str, run: int, env: str) -> Any:
    def ended() -> Any:
        found = [
            d
            for d in server.get(f"/api/deployments?app={app}")
            if d["run"] == run and d["environment"] == env
        ]
        if found and found[0]["state"] not in ("queued", "waiting", "running", "rolling_back"):
            return found[0]
        return None

    return wait_for(ended, timeout=60, interval=0.3)


@pytest.mark.slow  # four server starts
def test_rotate_key_then_a_wrong_key_file_stops_the_server_with_no_value_shown(
    server: ServerProcess, tmp_path: Path
) -> None:
    from tests.helpers import free_port, run_cli

    value = "Rt6-rotated-secret-value"
    server.add_app("shop", tmp_path / "repo")
    assert server.cli("secret", "set", "shop", "DB", input=value).returncode == 0
    key = server.data / "secrets.key"
    before = key.read_bytes()
    rotated = server.cli("secret", "rotate-key")
    assert rotated.returncode == 0, rotated.stderr
    assert "key rotated: 1 value(s) sealed again with the new key" in rotated.stdout
    assert key.read_bytes() != before and len(key.read_bytes().splitlines()) == 1
    server.stop()
    server.start()  # the rotated key file opens the store
    server.stop()

    def start_fails() -> str:
        done = run_cli(
            "server",
            "--data",
            str(server.data),
            "--listen",
            f"127.0.0.1:{free_port()}",
            timeout=60,
        )
        assert done.returncode == 2, done.stdout + done.stderr
        assert value not in done.stdout + done.stderr
        return done.stderr

    key.unlink()
    assert f"the key file {key} is missing" in start_fails()
    key.write_bytes(before)  # the key from before the rotation opens nothing
    key.chmod(0o600)
    assert f"the key file {key} does not open the 1 secret(s)" in start_fails()
