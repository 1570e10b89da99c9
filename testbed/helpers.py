"""Test and bench helpers: a real `conveyor server` process, the CLI as a subprocess, git repos."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from conveyor.client import Client
from testbed import forked
from testbed.forked import ForkedProcess

ADMIN_TOKEN = "cvy_test_admin_token_0123456789"
# set (by tests/conftest.py, given CONVEYOR_TEST_DB=postgresql) to a cluster's socket
# directory: each ServerProcess started without --db gets a new database there
TEST_CLUSTER_ENV = "CONVEYOR_TEST_PG_SOCKET"

# For a test's plain requests (no token), polls above all: each new httpx client loads
# the CA bundle again, about 25 ms of CPU, and tests poll several times a second.
plain_http = httpx.Client(timeout=30, trust_env=False)


# Ports a test's own servers listen on: a block per xdist worker, below the agents' instance
# ports (20000-32767) and the kernel's ephemeral range (32768-60999). A port the kernel chose
# (bind to 0) is free only until it is closed: another worker's next bind to 0 can get the
# same one before our server listens on it (CI once saw a sample app answer a server's POST).
PORT_BLOCK = 800
_next_port: list[int] = []  # the offset in the block of the next port to try


def _port_block() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return 10000 + (int(worker) if worker.isdigit() else 0) % 12 * PORT_BLOCK


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at host, from this worker's block, checked as a server binds
    (SO_REUSEADDR). One counter for every address: a port handed out for one address is not
    handed out again (for any) until the block wraps, since what got it may not listen yet
    and may listen on several addresses."""
    low = _port_block()
    if not _next_port:
        _next_port.append(os.getpid() % PORT_BLOCK)
    for _ in range(PORT_BLOCK):
        offset = _next_port[0]
        _next_port[0] = (offset + 1) % PORT_BLOCK
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, low + offset))
                s.listen(1)
            except OSError:
                continue
            return low + offset
    raise AssertionError(f"no free port on {host} in {low}-{low + PORT_BLOCK - 1}")


def wait_for(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.1) -> Any:
    """Poll until predicate returns something truthy; fail the test with a message otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


async def wait_for_async(
    predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.1
) -> Any:
    """wait_for inside a coroutine: the event loop runs between looks. The predicate may be
    a coroutine function (awaited at each look)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


class ManagedProcess:
    """A conveyor process started by a test: its log file, SIGKILL, graceful stop."""

    log_path: Path
    proc: subprocess.Popen[bytes] | ForkedProcess | None = None

    def spawn(self, args: list[str], env: dict[str, str]) -> None:
        # servers and agents forked from pre-imported modules: testbed/zygote.py says why
        self.proc = forked.start(args, env, self.log_path)
        if self.proc is not None:
            return
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps its own copy
        self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to tidy up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


class ServerProcess(ManagedProcess):
    """`conveyor server` as a real process on a loopback port, restartable."""

    def __init__(
        self,
        data: Path,
        env: dict[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        args: tuple[str, ...] = (),
        ca: Path | None = None,
    ) -> None:
        """`args`: more options of `conveyor server`; `ca`: it serves TLS (--tls-cert in
        `args`) with a certificate this CA signed, trusted by the test's clients."""
        self.data = data
        self.host = host
        self.port = free_port(host)
        self.url = f"{'https' if ca else 'http'}://{host}:{self.port}"
        self.args = args
        self.ca = ca
        self.token = ADMIN_TOKEN
        self.log_path = data.parent / f"{data.name}-server.log"
        self.extra_env = env or {}
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
            verify=ssl.create_default_context(cafile=str(ca)) if ca else True,
        )

    def start(self) -> ServerProcess:
        env = {**os.environ, "CONVEYOR_ADMIN_TOKEN": self.token, **self.extra_env}
        if "--db" not in self.args and os.environ.get(TEST_CLUSTER_ENV):
            # every server of the run on PostgreSQL (tests/conftest.py), a database each
            from testbed.postgres import database_on

            self.args = (*self.args, "--db", database_on(os.environ[TEST_CLUSTER_ENV]))
        self.spawn(
            [
                sys.executable,
                "-m",
                "conveyor",
                "server",
                "--data",
                str(self.data),
                "--listen",
                f"{self.host}:{self.port}",
                *self.args,
            ],
            env,
        )
        try:
            wait_for(self._healthy, timeout=60)  # a loaded 2-core machine can be that slow
        except BaseException:
            self.kill()  # the fixture never yields, so nobody else would stop it
            raise
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited ({self.proc.returncode}):\n{self.log()}")
        try:
            return self.http.get("/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    # API shortcuts, admin token
    def api(self) -> Client:
        """The product's typed API client (conveyor.client), with the admin token."""
        return Client(self.url, self.token, self.ca)

    def get(self, path: str, **kw: Any) -> Any:
        r = self.http.get(path, **kw)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: Any = None) -> Any:
        r = self.http.post(path, json=body if body is not None else {})
        assert r.status_code < 300, r.text
        return r.json()

    def add_app(self, name: str, repo: Path | str, **extra: Any) -> Any:
        return self.post("/api/apps", {"name": name, "repo": str(repo), **extra})

    def wait_run(self, run_id: int, timeout: float = 60) -> Any:
        def finished() -> Any:
            run = self.get(f"/api/runs/{run_id}")
            return run if run["state"] not in ("queued", "running") else None

        return wait_for(finished, timeout=timeout, interval=0.2)

    def cli(
        self, *args: str, input: str | None = None, token: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "CONVEYOR_SERVER": self.url,
            "CONVEYOR_TOKEN": token or self.token,
            "COLUMNS": "200",
            "NO_COLOR": "1",
        }
        if self.ca:
            env["CONVEYOR_CA"] = str(self.ca)
        return run_cli(*args, env=env, input=input, timeout=timeout)


@contextmanager
def running_server(data: Path, env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """A started `conveyor server` on `data`, stopped (and its client closed) afterwards."""
    proc = ServerProcess(data, env).start()
    try:
        yield proc
    finally:
        proc.stop()
        proc.http.close()


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    input: str | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "conveyor", *args]
    env = env or {**os.environ, "COLUMNS": "200"}
    if (done := forked.run(command, env, input, timeout, cwd)) is not None:
        return done
    return subprocess.run(
        command,
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=repo,
        env={**os.environ, **GIT_ENV},
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def make_repo(path: Path, files: dict[str, str], *, executable: tuple[str, ...] = ()) -> str:
    """A git repository on main with these files committed; returns the sha."""
    path.mkdir(parents=True, exist_ok=True)
    if not (path / ".git").exists():
        git(path, "init", "-q", "-b", "main")
    return commit(path, files, executable=executable)


def commit(
    path: Path, files: dict[str, str], *, message: str = "change", executable: tuple[str, ...] = ()
) -> str:
    for name, text in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        if name in executable:
            target.chmod(0o755)
    git(path, "add", "-A")
    git(path, "commit", "-q", "--allow-empty", "-m", message)
    return git(path, "rev-parse", "HEAD")


def config(app: str, test: list[str], build: list[str] | None = None, extra: str = "") -> str:
    lines = [f"app: {app}", "test:"]
    lines += [f"  - run: {cmd!r}" for cmd in test] or []
    if not test:
        lines[-1] = "test: []"
    lines.append("build:" if build else "build: []")
    lines += [f"  - run: {cmd!r}" for cmd in build or []]
    return "\n".join(lines) + "\n" + extra
