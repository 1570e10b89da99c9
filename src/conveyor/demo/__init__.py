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

    log_file = open(root / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    env = {**os.environ, "CONVEYOR_ADMIN_TOKEN": token}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conveyor",
            "server",
            "--data",
            str(root / "data"),
            "--listen",
            listen,
        ],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
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
        console.print()
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
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log_file.close()
