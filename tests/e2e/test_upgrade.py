"""Upgrades: a server drives agents of its minor version and the one before, refuses
older ones naming both versions; the agent reads its enrolment token from a file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conveyor import __version__
from tests.fleet import AgentProcess
from tests.helpers import ServerProcess, wait_for

ADDRESS = "127.0.44.2"


class VersionedServer(ServerProcess):
    """`conveyor server` whose package says it is `version` (as an upgraded one would)."""

    def __init__(self, data: Path, version: str) -> None:
        super().__init__(data)
        self.version = version

    def spawn(self, args: list[str], env: dict[str, str]) -> None:
        assert args[1:3] == ["-m", "conveyor"]
        pretend = (
            f"import conveyor; conveyor.__version__ = {self.version!r}; "
            "from conveyor.entry import main; main()"
        )
        super().spawn([sys.executable, "-c", pretend, *args[3:]], env)


class TokenFileAgent(AgentProcess):
    """An agent given its enrolment token in a file, never on its command line."""

    def launch(self) -> AgentProcess:
        token_file = self.data.parent / f"{self.name}.token"
        if not token_file.exists():
            enrolment = self.server.post("/api/hosts", {"name": self.name})["enrolment_token"]
            token_file.write_text(enrolment + "\n")
            self.secret = enrolment
        args = [sys.executable, "-m", "conveyor", "agent", "--server", self.server.url]
        args += ["--name", self.name, "--data", str(self.data), "--bind", self.address]
        args += ["--token-file", str(token_file)]
        self.spawn(args, {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")})
        return self


def test_a_server_one_minor_ahead_drives_the_agent_two_ahead_refuses_it(tmp_path: Path) -> None:
    major, minor = (int(part) for part in __version__.split(".")[:2])
    one_ahead = f"{major}.{minor + 1}.0"
    two_ahead = f"{major}.{minor + 2}.0"
    data = tmp_path / "server"
    server = VersionedServer(data, one_ahead).start()
    agent = TokenFileAgent(server, "web-1", tmp_path / "web-1", address=ADDRESS)
    try:
        agent.start()
        assert agent.proc is not None
        cmdline = Path(f"/proc/{agent.proc.pid}/cmdline").read_bytes()
        assert agent.secret.encode() not in cmdline  # never in argv, where `ps` shows it
        assert agent.observed()["agent_version"] == __version__
        listed = server.cli("host", "list")
        assert listed.returncode == 0 and __version__ in listed.stdout, listed.stdout
        # the server is upgraded once more: this agent is now two minor versions behind
        server.stop()
        server.version = two_ahead
        server.start()
        wait_for(lambda: agent.proc is not None and agent.proc.poll() is not None, timeout=60)
        assert agent.proc.returncode == 3, agent.log()
        said = agent.log()
        assert f"agent {__version__} is too old for server {two_ahead}" in said
        assert "upgrade conveyor on this host" in said
    finally:
        agent.stop_everything()
        server.stop()
        server.http.close()


def test_an_agent_that_names_an_old_version_cannot_enrol(tmp_path: Path) -> None:
    server = VersionedServer(tmp_path / "server", "0.5.0").start()
    try:
        enrolment = server.post("/api/hosts", {"name": "web-2"})["enrolment_token"]
        r = server.http.post(
            "/api/agent/enrol",
            json={"name": "web-2", "token": enrolment},
            headers={"X-Conveyor-Agent-Version": "0.3.9"},
        )
        assert r.status_code == 426
        assert "agent 0.3.9 is too old for server 0.5.0" in r.json()["detail"]
        r = server.http.post(
            "/api/agent/enrol",
            json={"name": "web-2", "token": enrolment},
            headers={"X-Conveyor-Agent-Version": "0.6.0"},
        )
        assert r.status_code == 426
        assert "upgrade the server first" in r.json()["detail"]
        r = server.http.post(
            "/api/agent/enrol",
            json={"name": "web-2", "token": enrolment},
            headers={"X-Conveyor-Agent-Version": "0.4.2"},
        )
        assert r.status_code == 200, r.text

        # a real agent that is too old stops at its enrolment, exit 3, saying why
        old = server.post("/api/hosts", {"name": "web-3"})["enrolment_token"]
        pretend = (
            "import conveyor; conveyor.__version__ = '0.3.9'; "
            "from conveyor.entry import main; main()"
        )
        args = ["agent", "--server", server.url, "--name", "web-3", "--bind", "127.0.44.4"]
        done = subprocess.run(
            [sys.executable, "-c", pretend, *args, "--data", str(tmp_path / "web-3")],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "CONVEYOR_TOKEN": old},
        )
        assert done.returncode == 3, done.stdout + done.stderr
        assert "agent 0.3.9 is too old for server 0.5.0" in done.stderr
    finally:
        server.stop()
        server.http.close()
