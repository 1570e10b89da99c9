"""`make demo` runs `conveyor demo`: it must work from nothing but this repository.

The demo is driven as a user runs it: started, left until it says everything is up,
looked at (its hosts over HTTP, its server's API), then stopped with Ctrl-C.
Only the demo listens on port 8000 of 127.0.0.2-4.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.fleet import _pids_with_env
from tests.helpers import free_port, wait_for

pytestmark = pytest.mark.slow

HOSTS = {"stage-1": "127.0.0.2", "web-1": "127.0.0.3", "web-2": "127.0.0.4"}


def listening(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((address, port)) == 0


def read_into(stream: IO[str], lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


def found(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match, f"no {pattern!r} in:\n{text}"
    return match[1]


@pytest.mark.timeout(360)
def test_demo_pushes_two_commits_to_three_hosts_then_cleans_up() -> None:
    # another checkout's demo test may hold port 8000 for a minute on this shared machine
    wait_for(lambda: not any(listening(a, 8000) for a in HOSTS.values()), timeout=150)
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "demo", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=read_into, args=(proc.stdout, lines), daemon=True)
    reader.start()
    root: Path | None = None
    try:
        wait_for(lambda: proc.poll() is not None or "Ctrl-C" in "".join(lines), timeout=300)
        out = "".join(lines)
        printed = re.search(r"conveyor demo in (\S+)", out)
        root = Path(printed[1]) if printed else None  # removed at the end, whatever happens
        assert proc.poll() is None, out
        assert root is not None
        token = found(r"CONVEYOR_TOKEN=(\S+)", out)

        # the pipeline as printed: tests, both environments, the canary's analysis, no lost request
        assert "unit tests" in out and "test_greeting" in out, out
        assert "25% of traffic to" in out and "analysis pass" in out, out
        assert re.search(r"load generator: \d+ requests during the deployment, 0 failed", out), out
        # the URLs to open and what to try
        for url in [server, f"{server}/docs", *(f"http://{a}:8000/" for a in HOSTS.values())]:
            assert url in out, url
        assert token.startswith("cvy_demo_")
        for command in ("status sample", "history sample", "rollback sample production"):
            assert f"conveyor {command}" in out

        api = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {token}"})
        with api:
            newest = {
                env_name: api.get(
                    "/api/deployments", params={"app": "sample", "environment": env_name}
                ).json()[0]
                for env_name in ("staging", "production")
            }
            production = api.get(f"/api/deployments/{newest['production']['id']}").json()
        v2 = production["release"]
        assert newest["staging"]["release"] == v2 and newest["staging"]["state"] == "succeeded"
        assert production["state"] == "succeeded", production
        assert production["strategy"] == "canary" and production["previous_release"] not in (
            None,
            v2,
        )
        steps = [(s["kind"], s["weight"], s["state"]) for s in production["steps"]]
        assert steps == [
            ("preview", 0, "succeeded"),
            ("weight", 25, "succeeded"),
            ("weight", 50, "succeeded"),
            ("weight", 100, "succeeded"),
            ("verify", None, "succeeded"),
        ], steps
        assert [s["judgement"]["verdict"] for s in production["steps"][1:3]] == ["pass", "pass"]
        for address in HOSTS.values():
            page = httpx.get(f"http://{address}:8000/", timeout=5).json()
            assert page == {"greeting": "hello from sample, v2", "release": v2}, address

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=90) == 0, "".join(lines)
        reader.join(timeout=10)
        for address in HOSTS.values():
            assert not listening(address, 8000), f"a router still listens on {address}:8000"
        assert not listening("127.0.0.1", port), "the server still listens"
        left = _pids_with_env(str(root))
        assert left == [], f"processes left behind: {left}"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
