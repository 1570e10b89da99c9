"""An app's instances run as `service.user` within `service.limits` on a real host (this
machine, which systemd does not run: setrlimit), and a user the host lacks fails the
deployment there with what to do, while the release before keeps serving."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.agent import procfs
from conveyor.agent.supervisor import DATA_VAR
from conveyor.demo.sample import sample_config
from tests.fleet import Fleet, running_fleet
from tests.helpers import ServerProcess, commit, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(os.geteuid() != 0, reason="the agent must be root to switch users"),
    pytest.mark.skipif(not os.access("/usr/bin/python3", os.X_OK), reason="no /usr/bin/python3"),
]

PRODUCTION = """
environments:
  production:
    hosts: [web-1]
"""


@pytest.fixture
def fleet(server: ServerProcess, tmp_path: Path) -> Iterator[Fleet]:
    # pytest's temporary directories are 0700: let `nobody` through to the releases, as a
    # host's /var/lib/conveyor-agent (0755) does
    for directory in [tmp_path, *tmp_path.parents]:
        if directory == Path(directory.anchor) or directory.stat().st_mode & 0o001:
            break
        directory.chmod(directory.stat().st_mode | 0o001)
    with running_fleet(server, tmp_path, {"web-1": "127.0.44.3"}) as f:
        yield f


def push(fleet: Fleet, label: str, user: str) -> Any:
    # the venv's python lives under /root, which `nobody` cannot enter: the system's
    text = sample_config(
        fleet.app, port=fleet.port, start="/usr/bin/python3 app/server.py", extra=PRODUCTION
    ).replace(
        "  drain: 10s\n",
        f"  drain: 10s\n  user: {user}\n  limits: {{memory: 1G, cpu: 1, files: 4096}}\n",
    )
    commit(fleet.repo, {"conveyor.yml": text, "VERSION": label})
    server = fleet.server
    run = server.wait_run(server.post(f"/api/apps/{fleet.app}/runs", {})["id"], timeout=120)
    assert run["state"] == "succeeded", run

    def ended() -> Any:
        found = [d for d in server.get("/api/deployments") if d["run"] == run["id"]]
        if found and found[0]["state"] in ("succeeded", "failed", "rolled_back", "aborted"):
            return server.get(f"/api/deployments/{found[0]['id']}")
        return None

    return wait_for(ended, timeout=120, interval=0.3)


def instance_pids(data: Path) -> list[int]:
    mine = str(data.resolve())
    return [
        pid
        for pid in procfs.pids()
        if procfs.environ(pid).get(DATA_VAR) == mine
        and Path(f"/proc/{pid}/comm").read_text().strip().startswith("python3")
    ]


def test_instances_run_as_service_user_and_an_unknown_user_fails_the_deployment(
    fleet: Fleet,
) -> None:
    v1 = push(fleet, "v1", "nobody")
    assert v1["state"] == "succeeded", v1
    assert fleet.serving("web-1") == v1["release"]
    (pid,) = instance_pids(fleet.agents["web-1"].data)
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    assert next(line for line in status if line.startswith("Uid:")).split()[1:] == ["65534"] * 4
    limits = Path(f"/proc/{pid}/limits").read_text()
    assert any(line.startswith("Max open files") and "4096" in line for line in limits.splitlines())
    assert any(
        line.startswith("Max address space") and str(1 << 30) in line
        for line in limits.splitlines()
    )

    v2 = push(fleet, "v2", "no-such-user-here")
    assert v2["state"] != "succeeded", v2
    assert "service.user 'no-such-user-here' does not exist on this host" in v2["reason"]
    assert "useradd --system" in v2["reason"]
    assert fleet.serving("web-1") == v1["release"]
