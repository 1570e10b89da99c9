"""`conveyor demo`: a server on a temporary data directory and a sample app run end to end."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console

from conveyor.cli.client import Client
from conveyor.cli.follow import follow_run
from conveyor.demo.sample import write_sample_app

console = Console(highlight=False)
HOST_ADDRESS = "127.0.0.2"
APP_URL = f"http://{HOST_ADDRESS}:8000/"


def conveyor_process(
    args: list[str], log_path: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """`python -m conveyor ARGS` in the background, its output in log_path."""
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "conveyor", *args], env=env, stdout=log, stderr=subprocess.STDOUT
        )


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server did not answer on {url} within {timeout:g}s")


def run_demo(listen: str = "127.0.0.1:8420", wait: bool = True) -> int:
    root = Path(tempfile.mkdtemp(prefix="conveyor-demo-"))
    token = "cvy_demo_" + secrets.token_urlsafe(16)
    url = f"http://{listen}"
    console.print(f"[bold]conveyor demo[/bold] in {root}")
    repo = root / "sample-app"
    repo.mkdir()
    sha = write_sample_app(repo)
    console.print(f"sample app repository: {repo} (main at {sha[:7]})")

    env = {**os.environ, "CONVEYOR_ADMIN_TOKEN": token}
    agent: subprocess.Popen[bytes] | None = None
    server = conveyor_process(
        ["server", "--data", str(root / "data"), "--listen", listen], root / "server.log", env
    )
    try:
        wait_healthy(url, server)
        console.print(f"server up at {url} (log: {root / 'server.log'})")
        client = Client(url, token)
        client.post("/api/apps", {"name": "sample", "repo": str(repo)})
        console.print("app [bold]sample[/bold] registered; starting a run of main")
        run = client.post("/api/apps/sample/runs", {})
        state = follow_run(client, run["id"], console)
        if state != "succeeded":
            console.print("[red]the demo run did not succeed[/red]")
            return 1
        agent = start_host(client, url, root, run_id=run["id"])
        console.print()
        console.print(f"the app:    {APP_URL}  (served by the router of host local-1)")
        console.print(f"API docs:   {url}/docs")
        console.print(f"try:        CONVEYOR_SERVER={url} CONVEYOR_TOKEN={token} conveyor status")
        if wait:
            console.print("[dim]the server keeps running; Ctrl-C to stop[/dim]")
            stop = {signal.SIGINT, signal.SIGTERM}
            signal.pthread_sigmask(signal.SIG_BLOCK, stop)
            signal.sigwait(stop)
        return 0
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        console.print(f"[red]demo failed: {exc}[/red]")
        return 1
    finally:
        if agent is not None:
            stop_host(agent, root)
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


def start_host(client: Client, url: str, root: Path, *, run_id: int) -> subprocess.Popen[bytes]:
    """One local host: an agent (and its router) on 127.0.0.2, given the new release."""
    release = client.get(f"/api/runs/{run_id}")["release"]
    token = client.post("/api/hosts", {"name": "local-1"})["enrolment_token"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    agent = conveyor_process(
        [
            "agent",
            "--server",
            url,
            "--name",
            "local-1",
            "--token",
            token,
            "--data",
            str(root / "agent"),
            "--bind",
            HOST_ADDRESS,
        ],
        root / "agent.log",
        env,
    )
    console.print(
        f"host [bold]local-1[/bold]: agent and router on {HOST_ADDRESS} "
        f"(log: {root / 'agent.log'}); deploying {release}"
    )
    client.request(
        "PUT",
        "/api/hosts/local-1/apps/sample",
        json={"releases": [{"release": release, "weight": 100}]},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if agent.poll() is not None:
            raise RuntimeError(f"the agent exited with code {agent.returncode}")
        try:
            answer = httpx.get(APP_URL, timeout=1)
            if answer.status_code == 200 and answer.json().get("release") == release:
                console.print(
                    f"[green]{release} serves on {APP_URL}[/green]: {answer.text.strip()}"
                )
                return agent
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{release} did not come up on {APP_URL} within 60s (see agent.log)")


def stop_host(agent: subprocess.Popen[bytes], root: Path) -> None:
    """Stop the agent, then what outlives it by design: its instances and its router."""
    import asyncio

    from conveyor.agent.supervisor import Supervisor
    from conveyor.router.embedded import EmbeddedRouter

    agent.terminate()
    try:
        agent.wait(timeout=15)
    except subprocess.TimeoutExpired:
        agent.kill()
    data = root / "agent"

    async def teardown() -> None:
        supervisor = Supervisor(data)
        await supervisor.adopt()
        await supervisor.stop_all(grace=5)
        await supervisor.close()
        await EmbeddedRouter(data / "router.sock", data / "router.log").stop()

    asyncio.run(teardown())
