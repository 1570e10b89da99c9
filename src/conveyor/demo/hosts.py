"""The demo's local hosts: an agent with its embedded router per loopback address."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from conveyor.client import Client

APP_PORT = 8000  # the sample app's public port, on every host's router
# production serves it by its name instead, on each router's shared ports
HTTP_PORT = 8080
HTTPS_PORT = 8443
DEMO_NAME = "sample.conveyor.test"


@dataclass
class LocalHost:
    """One host of the demo: its name, environment, address and agent process."""

    name: str
    environment: str
    address: str
    root: Path
    agent: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.root / self.name

    @property
    def log(self) -> Path:
        return self.root / f"{self.name}-agent.log"

    # by name over HTTPS (the app's domains in this host's environment)
    by_name: bool = False

    @property
    def url(self) -> str:
        if self.by_name:
            return f"https://{self.address}:{HTTPS_PORT}/"
        return f"http://{self.address}:{APP_PORT}/"

    def curl(self, ca: Path) -> str:
        """The command that asks this host for the app as a client would."""
        if not self.by_name:
            return f"curl {self.url}"
        return (
            f"curl --cacert {ca} --resolve {DEMO_NAME}:{HTTPS_PORT}:{self.address} "
            f"https://{DEMO_NAME}:{HTTPS_PORT}/"
        )


def conveyor_process(
    args: list[str], log_path: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """`python -m conveyor ARGS` in the background, its output in log_path."""
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "conveyor", *args], env=env, stdout=log, stderr=subprocess.STDOUT
        )


def check_ports_free(hosts: list[LocalHost]) -> None:
    """Fail early, and say why, if a router could not listen (an earlier demo still up?)."""
    for host in hosts:
        for port in (HTTP_PORT, HTTPS_PORT) if host.by_name else (APP_PORT,):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((host.address, port))
                except OSError as exc:
                    raise RuntimeError(
                        f"{host.address}:{port} is taken ({exc.strerror}): the router of "
                        f"{host.name} must listen there; is another conveyor demo still "
                        "running?"
                    ) from None


def start_agents(client: Client, server_url: str, hosts: list[LocalHost]) -> None:
    """Register each host, start its agent (which starts its router); wait until all are up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    for host in hosts:
        token = client.add_host(host.name).enrolment_token
        host.agent = conveyor_process(
            [
                "agent",
                "--server",
                server_url,
                "--name",
                host.name,
                "--data",
                str(host.data),
                "--router",
                "embedded",
                "--bind",
                host.address,
                "--http-port",
                str(HTTP_PORT),
                "--https-port",
                str(HTTPS_PORT),
            ],
            host.log,
            env | {"CONVEYOR_TOKEN": token},  # not in argv, where `ps` would show it
        )
    deadline = time.monotonic() + 60
    waiting = list(hosts)
    while waiting:
        for host in list(waiting):
            assert host.agent is not None
            if host.agent.poll() is not None:
                raise RuntimeError(
                    f"the agent of {host.name} exited with code {host.agent.returncode} "
                    f"(see {host.log})"
                )
            seen = client.host(host.name)
            if seen.online and seen.observed is not None and seen.observed.router_alive:
                waiting.remove(host)
        if waiting and time.monotonic() > deadline:
            names = ", ".join(h.name for h in waiting)
            raise RuntimeError(f"host(s) {names} did not come online within 60s (see their logs)")
        time.sleep(0.2)


def stop_hosts(hosts: list[LocalHost]) -> None:
    """Stop the agents, then what outlives them by design: their instances and routers."""
    from conveyor.agent.routing.embedded import EmbeddedRouter
    from conveyor.agent.supervisor import Supervisor

    started = [h for h in hosts if h.agent is not None]
    for host in started:
        assert host.agent is not None
        host.agent.terminate()
    for host in started:
        assert host.agent is not None
        try:
            host.agent.wait(timeout=15)
        except subprocess.TimeoutExpired:
            host.agent.kill()
            host.agent.wait()

    async def teardown(data: Path) -> None:
        supervisor = Supervisor(data)
        await supervisor.adopt()
        await supervisor.stop_all(grace=5)
        await supervisor.close()
        await EmbeddedRouter(data / "router.sock", data / "router.log").stop()

    async def all_hosts() -> None:
        await asyncio.gather(*(teardown(h.data) for h in started if h.data.exists()))

    asyncio.run(all_hosts())
