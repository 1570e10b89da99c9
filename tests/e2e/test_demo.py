"""`make demo` runs `conveyor demo`: it must work from nothing but this repository.

The demo is driven as a user runs it, in an 80-column terminal: started, left until it
says everything is up, looked at (its hosts over HTTP, its server's API), its suggested
next steps pasted into another shell exactly as printed, then stopped with Ctrl-C.
Only the demo listens on port 8000 of 127.0.0.2 and 8080/8443 of 127.0.0.3-4 (production
serves the sample app by its name over HTTPS, with a certificate from the demo's own CA).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import socket
import ssl
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
NAME = "sample.conveyor.test"
STAGING = "127.0.0.2"


def ports(address: str) -> tuple[int, ...]:
    return (8000,) if address == STAGING else (8080, 8443)


def page(address: str, root: Path) -> dict[str, str]:
    """What a host serves: staging on its own port, production by name over HTTPS."""
    if address == STAGING:
        return dict(httpx.get(f"http://{address}:8000/", timeout=5).json())
    trust = ssl.create_default_context(cafile=str(root / "tls" / "ca.pem"))
    with httpx.Client(verify=trust, timeout=5) as client:
        answer = client.get(
            f"https://{address}:8443/", headers={"Host": NAME}, extensions={"sni_hostname": NAME}
        )
    return dict(answer.json())


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


@pytest.mark.timeout(600)
def test_demo_pushes_two_commits_to_three_hosts_then_cleans_up(tmp_path: Path) -> None:
    # another checkout's demo test may hold port 8000 for a minute on this shared machine
    wait_for(
        lambda: not any(listening(a, p) for a in HOSTS.values() for p in ports(a)), timeout=150
    )
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
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
        for url in [server, f"{server}/docs", f"http://{STAGING}:8000/"]:
            assert url in out, url
        # production by name over HTTPS: the curl line printed, run as it is
        curl = found(r"(curl --cacert \S+ --resolve \S+ https://\S+)", out)
        assert f"--resolve {NAME}:8443:127.0.0.3 https://{NAME}:8443/" in out, out
        assert token.startswith("cvy_demo_")
        for command in ("status sample", "history sample", "rollback sample production"):
            assert f"conveyor {command}" in out
        assert "requests a second" in out and "until Ctrl-C" in out, out

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
            ("monitor", 100, "succeeded"),
        ], steps
        assert [s["judgement"]["verdict"] for s in production["steps"][1:3]] == ["pass", "pass"]
        for address in HOSTS.values():
            seen = page(address, root)
            assert seen == {"greeting": "hello from sample, v2", "release": v2}, address
        if shutil.which("curl"):
            done = subprocess.run(curl.split(), capture_output=True, text=True, check=False)
            assert done.returncode == 0 and v2 in done.stdout, (curl, done.stdout, done.stderr)
        plain = httpx.get("http://127.0.0.3:8080/", headers={"Host": NAME}, timeout=5)
        assert plain.status_code == 308 and plain.headers["location"] == f"https://{NAME}:8443/"

        run_next_steps(out, tmp_path, server, token, v2, root)

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=90) == 0, "".join(lines)
        reader.join(timeout=10)
        assert "conveyor demo stopped" in "".join(lines[-3:]), "".join(lines)
        for address in HOSTS.values():
            for port_ in ports(address):
                assert not listening(address, port_), f"a router still listens on {address}:{port_}"
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


def next_steps(out: str) -> list[str]:
    """The commands the demo suggests, as printed: the lines under "try, in another shell"."""
    lines = out[out.index("try, in another shell") :].splitlines()[1:]
    return [line[2:] for line in itertools.takewhile(lambda x: x.startswith("  "), lines)]


def run_next_steps(out: str, tmp_path: Path, server: str, token: str, v2: str, root: Path) -> None:
    """Paste each suggested command into a fresh shell, after the exports printed before it.

    The shell has none of conveyor's variables and no virtualenv on its PATH; $EDITOR
    is a sed that changes the greeting, as a person would in an editor.
    """
    steps = next_steps(out)
    assert steps[0] == f"export CONVEYOR_SERVER={server} CONVEYOR_TOKEN={token}", steps
    assert any(s.startswith("conveyor deploy sample production") for s in steps), steps
    assert any("git push" in s for s in steps), steps
    venv = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "VIRTUAL_ENV"))}
    env |= {"PATH": path, "COLUMNS": "80", "NO_COLOR": "1", "HOME": str(tmp_path)}
    env["EDITOR"] = "sed -i s/v2/v3/"
    exports: list[str] = []
    for step in steps:
        if step.startswith("export "):
            exports.append(step)
            continue
        script = "\n".join(["set -e", *exports, step])
        done = subprocess.run(
            ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=240
        )
        assert done.returncode == 0, f"{step}\n{done.stdout}\n{done.stderr}"
        if step.startswith(("conveyor status", "conveyor history")):  # tables fit
            for line in done.stdout.splitlines():
                assert len(line) <= 80, f"{step}: a line wider than 80 columns:\n{done.stdout}"
    # the push started a run whose release climbed to production, under the demo's load
    api = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {token}"})
    with api:

        def v3_deployed() -> bool:
            found = api.get(
                "/api/deployments", params={"app": "sample", "environment": "production"}
            ).json()[0]
            assert found["state"] not in ("failed", "cancelled"), found
            return found["release"] != v2 and found["state"] == "succeeded"

        wait_for(v3_deployed, timeout=240, interval=0.5)
    for address in HOSTS.values():
        assert page(address, root)["greeting"] == "hello from sample, v3", address
