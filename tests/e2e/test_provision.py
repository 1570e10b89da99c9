"""Integration environments from scratch (issue 19 point 2), with real processes.

The sample app's `infra/up.sh` registers a host named after the environment's record
(`conveyor host add`, with the token conveyor passes), starts a fresh agent for it on a
new loopback address of 127.0.64.0/24 and prints its name; `infra/down.sh` stops that
agent, its router and its instances, and notes what it tore down. Each deployment gets
such an environment, is verified on it, and has it torn down: when it passes, when its
tests fail, and when the server is killed during the stage (the deployment continues
when it starts again, and tears down at its end). Bad input: a provision command that
fails or prints no host, a host that never enrols, a teardown that fails (retried).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.agent.procfs import pids_under
from conveyor.demo.sample import sample_config, write_sample_app
from tests.fleet import Fleet
from tests.helpers import ServerProcess, commit, free_port, running_server, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

ENDED = ("succeeded", "failed", "rolled_back", "cancelled", "superseded")

UP = """\
#!/bin/bash
# a fresh host for this environment: registered, its agent started on a new address
set -euo pipefail
mode=$(cat "{state}/mode" 2>/dev/null || echo ok)
name="int-$CONVEYOR_PROVISION_ID"
echo "provisioning $name for $CONVEYOR_RELEASE" >&2
echo "$CONVEYOR_PROVISION_ID" >> "{state}/provisioned"
while [ "$mode" = wait ] && [ ! -e "{state}/go" ]; do sleep 0.2; done
case "$mode" in
  fail) echo "no capacity left" >&2; exit 3 ;;
  silent) exit 0 ;;
esac
token=$({py} -m conveyor host add "$name" --json \\
  | {py} -c 'import json, sys; print(json.load(sys.stdin)["enrolment_token"])')
if [ "$mode" = never ]; then echo "$name"; exit 0; fi
address="127.0.64.$((10 + CONVEYOR_PROVISION_ID))"
echo "$address" > "{state}/$name.address"
setsid nohup {py} -m conveyor agent --server "$CONVEYOR_SERVER" --token "$token" \\
  --name "$name" --data "{state}/$name" --bind "$address" \\
  > "{state}/$name.log" 2>&1 < /dev/null &
echo $! > "{state}/$name.pid"
echo "$name"
"""

DOWN = """\
#!/bin/bash
set -euo pipefail
if [ -e "{state}/teardown-fails" ]; then
  rm "{state}/teardown-fails"; echo "the cloud said no" >&2; exit 4
fi
name="int-$CONVEYOR_PROVISION_ID"
if [ -e "{state}/$name.pid" ]; then kill "$(cat "{state}/$name.pid")" 2>/dev/null || true; fi
{py} -c 'import os, sys
from conveyor.agent.procfs import pids_under
for pid in pids_under(sys.argv[1]):
    os.kill(pid, 9)' "{state}/$name"
echo "$CONVEYOR_PROVISION_ID $CONVEYOR_HOSTS" >> "{state}/torn-down"
"""

ENVIRONMENTS = """
environments:
  integration:
    provision: ./infra/up.sh
    teardown: ./infra/down.sh
    verify:
      - http: GET /healthz
      - run: test "$(cat VERSION)" != broken && while test -e {state}/hold; do sleep 0.2; done
"""


class Integration:
    """A server and the sample app whose only environment is provisioned per deployment."""

    def __init__(self, server: ServerProcess, tmp: Path) -> None:
        self.server = server
        self.state = tmp / "infra-state"
        self.state.mkdir()
        self.repo = tmp / "sample"
        self.port = free_port("127.0.64.10")
        write_sample_app(self.repo, port=self.port)
        server.add_app("sample", self.repo)

    def push(self, label: str) -> dict[str, Any]:
        """A commit with this VERSION, run; its integration deployment once ended."""
        self.commit_and_run(label)
        finished = self.server.wait_run(self.run_id, 120)
        assert finished["state"] == "succeeded", finished
        return self.ended()

    def commit_and_run(self, label: str) -> None:
        # notifications go nowhere (a refused port): their records are what is checked
        notify = 'notify:\n  - url: "json://127.0.64.1:9/"\n    on: [failure]\n'
        files = {
            "conveyor.yml": sample_config(
                port=self.port, extra=ENVIRONMENTS.format(state=self.state) + notify
            ),
            "VERSION": label,
            "infra/up.sh": UP.format(state=self.state, py=sys.executable),
            "infra/down.sh": DOWN.format(state=self.state, py=sys.executable),
        }
        commit(self.repo, files, executable=("infra/up.sh", "infra/down.sh"))
        self.run_id = int(self.server.post("/api/apps/sample/runs", {})["id"])

    def deployment(self) -> dict[str, Any] | None:
        for d in self.server.get("/api/deployments?app=sample&environment=integration"):
            if d["run"] == self.run_id:
                return self.server.get(f"/api/deployments/{d['id']}")  # type: ignore[no-any-return]
        return None

    def ended(self, timeout: float = 180) -> dict[str, Any]:
        def done() -> Any:
            d = self.deployment()
            return d if d is not None and d["state"] in ENDED else None

        return wait_for(done, timeout=timeout, interval=0.3)  # type: ignore[no-any-return]

    def torn_down(self, count: int = 1) -> list[str]:
        """What down.sh noted, once it has run `count` times (after a deployment ends)."""
        path = self.state / "torn-down"

        def lines() -> list[str]:
            found = path.read_text().splitlines() if path.exists() else []
            return found if len(found) >= count else []

        return wait_for(lines, timeout=60, interval=0.2)  # type: ignore[no-any-return]

    def provisioned(self) -> list[str]:
        path = self.state / "provisioned"
        return path.read_text().splitlines() if path.exists() else []

    def agent_alive(self, name: str) -> bool:
        return bool(pids_under(str(self.state / name)))

    def kill_everything(self) -> None:
        for pid in pids_under(str(self.state)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def integration(tmp_path: Path) -> Iterator[Integration]:
    # hosts that never enrol are given up on quickly
    with running_server(tmp_path / "data", {"CONVEYOR_ENROL_TIMEOUT": "8"}) as server:
        env = Integration(server, tmp_path)
        try:
            yield env
        finally:
            env.kill_everything()


def host_state(server: ServerProcess, name: str) -> str:
    return str(server.get(f"/api/hosts/{name}")["state"])


def test_each_deployment_gets_a_fresh_environment_torn_down_pass_or_fail(
    integration: Integration,
) -> None:
    server = integration.server
    good = integration.push("v1")
    assert good["state"] == "succeeded", good
    (first,) = integration.provisioned()
    name = f"int-{first}"
    assert integration.torn_down() == [f"{first} {name}"]
    assert not integration.agent_alive(name)
    assert host_state(server, name) == "revoked"  # its credential went with it

    broken = integration.push("broken")  # its verify fails: rolled back, torn down all the same
    assert broken["state"] in ("failed", "rolled_back"), broken
    assert "verify failed" in broken["reason"], broken
    second = integration.provisioned()[-1]
    assert second != first
    assert integration.torn_down(2)[-1] == f"{second} int-{second}"
    assert not integration.agent_alive(f"int-{second}")


def test_a_server_killed_during_the_stage_tears_down_when_it_is_back(
    integration: Integration,
) -> None:
    server = integration.server
    (integration.state / "hold").touch()  # the verify script waits while this exists
    integration.commit_and_run("v1")

    def verifying() -> Any:
        d = integration.deployment()
        if d is None:
            return None
        return (
            d
            if any(s["kind"] == "verify" and s["state"] == "running" for s in d["steps"])
            else None
        )

    wait_for(verifying, timeout=180, interval=0.3)
    (number,) = integration.provisioned()
    assert integration.agent_alive(f"int-{number}")
    server.kill()
    (integration.state / "hold").unlink()
    server.start()
    done = integration.ended()
    assert done["state"] == "succeeded", done
    assert integration.torn_down() == [f"{number} int-{number}"]
    assert not integration.agent_alive(f"int-{number}")


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("fail", "the provision command failed: $ ./infra/up.sh: failed (exit 3)"),
        ("silent", "printed no host names"),
        ("never", "did not enrol and report within 8 s"),
    ],
)
def test_bad_provisions_fail_the_deployment_and_are_torn_down(
    integration: Integration, mode: str, says: str
) -> None:
    (integration.state / "mode").write_text(mode)
    d = integration.push("v1")
    assert d["state"] == "failed", d
    assert says in d["reason"], d
    assert d["reason"].endswith("; torn down"), d
    (number,) = integration.provisioned()
    hosts = [f"int-{number}"] if mode == "never" else []  # named, then never heard of
    assert [line.split() for line in integration.torn_down()] == [[number, *hosts]]


def test_a_failed_teardown_is_said_and_tried_again(integration: Integration) -> None:
    (integration.state / "teardown-fails").touch()
    d = integration.push("v1")
    assert d["state"] == "succeeded", d
    (number,) = integration.provisioned()

    def torn() -> Any:
        found = integration.deployment()
        return found if found and "torn down at attempt" in (found["reason"] or "") else None

    # the deployment's reason said the first attempt failed, then that a later one worked
    again = wait_for(torn, timeout=60, interval=0.3)
    assert "torn down at attempt 2]" in again["reason"], again
    assert integration.torn_down() == [f"{number} int-{number}"], again
    assert not integration.agent_alive(f"int-{number}")
    log = integration.server.log()
    assert "teardown failed" in log and "the cloud said no" in log
    titles = [n["title"] for n in integration.server.get("/api/notifications?app=sample")]
    assert any(t.startswith("❌ teardown failed: sample integration") for t in titles), titles


def test_other_deployments_go_on_while_an_environment_is_provisioned(
    integration: Integration, tmp_path: Path
) -> None:
    (integration.state / "mode").write_text("wait")  # up.sh waits for the go file
    integration.commit_and_run("v1")
    wait_for(integration.provisioned, timeout=120, interval=0.3)
    other = Fleet(integration.server, tmp_path / "other", {"web-1": "127.0.64.3"}, app="other")
    try:
        other.start()
        other.commit("o1", "\nenvironments:\n  production:\n    hosts: [web-1]\n")
        server = integration.server
        run = server.wait_run(server.post("/api/apps/other/runs", {})["id"], 120)

        def deployed() -> Any:
            found = server.get("/api/deployments?app=other&environment=production")
            return found if found and found[0]["state"] == "succeeded" else None

        wait_for(deployed, timeout=120, interval=0.3)
        assert other.serving("web-1") == run["release"]
        pending = integration.deployment()
        assert pending is not None and pending["state"] == "queued", pending  # still provisioning
    finally:
        (integration.state / "go").touch()
        other.stop_everything()
    done = integration.ended()
    assert done["state"] == "succeeded", done
    (number,) = integration.provisioned()
    assert integration.torn_down() == [f"{number} int-{number}"]
